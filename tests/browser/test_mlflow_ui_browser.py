"""A tracking server's MLflow UI in a real browser (Playwright driving Debian's Chromium): the presigned URL
signs the browser in, the UI lists the experiment and the run the MLflow client logged through the platform.

A screenshot lands in ``test-artifacts/mlflow/`` (or ``$OPENSAGE_TEST_ARTIFACTS``).
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from helpers import running_platform

CHROMIUM = "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip(f"browser tests need Debian's Chromium at {CHROMIUM}", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="browser tests need `pip install playwright`")
pytest.importorskip("mlflow")
pytest.importorskip("sagemaker_mlflow")

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
ARTIFACTS = Path(os.environ.get("OPENSAGE_TEST_ARTIFACTS", Path(__file__).parents[2] / "test-artifacts")) / "mlflow"
BUCKET = "mlflow-browser"

LOG_RUN = """
import mlflow
mlflow.set_tracking_uri({arn!r})
mlflow.set_experiment("browser-churn")
with mlflow.start_run(run_name="shown-in-the-ui"):
    mlflow.log_param("eta", 0.3)
    mlflow.log_metric("auc", 0.91)
print("EXPERIMENT", mlflow.get_experiment_by_name("browser-churn").experiment_id)
"""


def _wait(sm: Any, name: str, status: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while sm.describe_mlflow_tracking_server(TrackingServerName=name)["TrackingServerStatus"] != status:
        assert time.monotonic() < deadline
        time.sleep(0.5)


@pytest.mark.slow
def test_the_mlflow_ui_shows_the_logged_run(tmp_path: Path) -> None:
    with running_platform(tmp_path / "home", tmp_path / "aws") as platform:
        session = platform.session()
        session.client("s3").create_bucket(Bucket=BUCKET)
        sm = session.client("sagemaker")
        account = session.client("sts").get_caller_identity()["Account"]
        name = f"ui-{uuid.uuid4().hex[:8]}"
        arn = sm.create_mlflow_tracking_server(
            TrackingServerName=name,
            ArtifactStoreUri=f"s3://{BUCKET}/{name}",
            RoleArn=f"arn:aws:iam::{account}:role/OpenSageExecutionRole",
        )["TrackingServerArn"]
        _wait(sm, name, "Created")
        out = platform.run_python(LOG_RUN.format(arn=arn), tmp_path)
        experiment = next(x for x in out.splitlines() if x.startswith("EXPERIMENT ")).split()[1]
        url = sm.create_presigned_mlflow_tracking_server_url(TrackingServerName=name)["AuthorizedUrl"]
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(30_000)
            try:
                page.goto(url)  # signs in, then lands on the UI's home page
                page.get_by_text("browser-churn").first.wait_for()
                assert page.url.startswith(platform.api_url + f"/_opensage/mlflow/ui/{name}/")
                page.goto(platform.api_url + f"/_opensage/mlflow/ui/{name}/#/experiments/{experiment}/runs")
                page.get_by_text("shown-in-the-ui").first.wait_for()
            finally:
                page.screenshot(path=str(ARTIFACTS / "experiment-runs.png"), full_page=True)
                browser.close()
        sm.delete_mlflow_tracking_server(TrackingServerName=name)
