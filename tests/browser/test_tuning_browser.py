"""A tuning job's console page in a real browser: its charts draw, its trials table sorts, Stop is offered.

Screenshots land in ``test-artifacts/console/`` (or ``$OPENSAGE_TEST_ARTIFACTS``) beside the other pages'.
"""

from __future__ import annotations

import io
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from helpers import RunningPlatform, running_platform

CHROMIUM = "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip(
        f"browser tests need Debian's Chromium at {CHROMIUM} (apt-get install -y chromium)", allow_module_level=True
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="browser tests need `pip install playwright`")

IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
ARTIFACTS = Path(os.environ.get("OPENSAGE_TEST_ARTIFACTS", Path(__file__).parents[2] / "test-artifacts")) / "console"
BUCKET = "tuning-console"


def _csv(rows: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 3))
    y = (x[:, 0] + rng.normal(scale=0.7, size=rows) > 0).astype(int)
    buf = io.StringIO()
    np.savetxt(buf, np.column_stack([y, x]), delimiter=",", fmt="%.4g")
    return buf.getvalue().encode()


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningPlatform, str]]:
    root = tmp_path_factory.mktemp("tuning-console")
    with running_platform(root / "home", root / "aws") as platform:
        session = platform.session()
        s3, sm = session.client("s3"), session.client("sagemaker")
        s3.create_bucket(Bucket=BUCKET)
        for channel, seed in (("train", 0), ("validation", 1)):
            s3.put_object(Bucket=BUCKET, Key=f"{channel}/data.csv", Body=_csv(200, seed))
        account = session.client("sts").get_caller_identity()["Account"]
        name = "console-tuning"
        sm.create_hyper_parameter_tuning_job(
            HyperParameterTuningJobName=name,
            HyperParameterTuningJobConfig={
                "Strategy": "Random",
                "RandomSeed": 4,
                "ResourceLimits": {"MaxNumberOfTrainingJobs": 4, "MaxParallelTrainingJobs": 2},
                "HyperParameterTuningJobObjective": {"Type": "Maximize", "MetricName": "validation:auc"},
                "ParameterRanges": {
                    "ContinuousParameterRanges": [{"Name": "eta", "MinValue": "0.05", "MaxValue": "0.5"}],
                    "CategoricalParameterRanges": [{"Name": "booster", "Values": ["gbtree", "dart"]}],
                },
            },
            TrainingJobDefinition={
                "StaticHyperParameters": {"objective": "binary:logistic", "num_round": "5"},
                "AlgorithmSpecification": {"TrainingImage": IMAGE, "TrainingInputMode": "File"},
                "RoleArn": f"arn:aws:iam::{account}:role/OpenSageExecutionRole",
                "InputDataConfig": [
                    {
                        "ChannelName": c,
                        "ContentType": "text/csv",
                        "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/{c}/"}},
                    }
                    for c in ("train", "validation")
                ],
                "OutputDataConfig": {"S3OutputPath": f"s3://{BUCKET}/out"},
                "HyperParameterTuningResourceConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.large"},
                "StoppingCondition": {"MaxRuntimeInSeconds": 600},
            },
        )
        deadline = time.monotonic() + 120
        while sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)[
            "HyperParameterTuningJobStatus"
        ] in ("InProgress", "Stopping"):
            assert time.monotonic() < deadline
            time.sleep(0.3)
        yield platform, name


def test_tuning_job_page_draws_its_charts(tuned: tuple[RunningPlatform, str]) -> None:
    platform, name = tuned
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    credentials = platform.session().get_credentials()
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_context(base_url=platform.api_url, viewport={"width": 1400, "height": 1000}).new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto("/console/tuning-jobs")
        page.fill("input[name=access_key_id]", credentials.access_key)
        page.fill("input[name=secret]", credentials.secret_key)
        page.click("button[type=submit]")
        page.wait_for_url(re.compile(r"/console/tuning-jobs$"))
        page.click(f"text={name}")
        page.wait_for_selector("#tuning-charts .uplot")
        charts: Any = page.locator("#tuning-charts .chart h3").all_inner_texts()
        assert charts[0] == "validation:auc per trial"
        assert any(c.startswith("booster (dart, gbtree)") for c in charts) and "eta vs validation:auc" in charts
        assert page.locator("#trials tbody tr").count() == 4
        page.screenshot(path=str(ARTIFACTS / "30-tuning-job.png"), full_page=True)
        page.click("#trials >> text=Training job")  # sort by name
        page.wait_for_url(re.compile(r"sort=Name"))
        names = page.locator("#trials tbody tr td:first-child a").all_inner_texts()
        assert names == sorted(names, reverse=True)
        assert page.locator("form[action$='/deploy'] button").inner_text() == "Deploy"
        assert errors == []
        browser.close()
