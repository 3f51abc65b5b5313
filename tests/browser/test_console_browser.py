"""The web console in a real browser (Playwright driving Debian's Chromium) against ``opensage up``.

Screenshots of every page land in ``test-artifacts/console/`` (or ``$OPENSAGE_TEST_ARTIFACTS``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from helpers import RunningPlatform, running_platform

CHROMIUM = "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip(
        f"console browser tests need Debian's Chromium at {CHROMIUM} (apt-get install -y chromium)",
        allow_module_level=True,
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="console browser tests need `pip install playwright`")

ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
BUCKET = "console-tests"
PASSWORD = "correct horse battery"
ARTIFACTS = Path(os.environ.get("OPENSAGE_TEST_ARTIFACTS", Path(__file__).parents[2] / "test-artifacts")) / "console"


def _csv(rows: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 4))
    y = (x[:, 0] + 0.5 * x[:, 1] + rng.normal(scale=0.3, size=rows) > 0).astype(int)
    lines = (",".join([str(label)] + [f"{v:.4f}" for v in row]) for label, row in zip(y, x, strict=True))
    return "\n".join(lines).encode()


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    root = tmp_path_factory.mktemp("console")
    with running_platform(root / "home", root / "aws") as running:
        s3 = running.session().client("s3")
        s3.create_bucket(Bucket=BUCKET)
        s3.put_object(Bucket=BUCKET, Key="data/train/train.csv", Body=_csv(600, 0))
        s3.put_object(Bucket=BUCKET, Key="data/validation/validation.csv", Body=_csv(200, 1))
        done = subprocess.run(
            [sys.executable, "-m", "opensage", "console-password", "--home", str(running.home), "--password-stdin"],
            env=running.env,
            input=PASSWORD + "\n",
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any, platform: RunningPlatform, request: pytest.FixtureRequest) -> Iterator[Any]:
    context = browser.new_context(base_url=platform.api_url, viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(15_000)
    page = context.new_page()
    yield page
    shot(page, f"last-{request.node.name}")  # where each test ended: the first thing to look at when one fails
    context.close()


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def sign_in(page: Any, platform: RunningPlatform, target: str = "/console/") -> None:
    credentials = platform.session().get_credentials()
    page.goto(target)
    page.fill("input[name=access_key_id]", credentials.access_key)
    page.fill("input[name=secret]", credentials.secret_key)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/console/(?!signin)"))


def field_error(page: Any, field: str) -> str:
    return page.locator(f"#err-{field} .field-error").inner_text()


def test_unauthenticated_visit_goes_to_sign_in_and_back(page: Any, platform: RunningPlatform) -> None:
    page.goto("/console/endpoints")
    assert "/console/signin?next=/console/endpoints" in page.url
    shot(page, "01-sign-in")
    page.fill("input[name=access_key_id]", "AKIANOSUCHKEY0000000")
    page.fill("input[name=secret]", "wrong")
    page.click("button[type=submit]")
    assert "not valid" in page.locator(".form-error").inner_text()
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/console/endpoints")
    assert page.locator("h1").inner_text() == "Endpoints"


def test_bad_form_values_show_the_api_validation_message(page: Any, platform: RunningPlatform) -> None:
    sign_in(page, platform, "/console/training-jobs/new")
    page.fill("#f-name", "not a valid name!")
    page.fill("#f-train", f"s3://{BUCKET}/data/train/")
    page.fill("#f-instance_count", "two")
    page.fill("#f-max_runtime", "0")
    page.fill("#f-output_path", "")
    page.fill("#f-hp_eta", "5")  # checked as typed, with the container's own rules
    page.locator("#err-hp_eta .field-error").wait_for()
    assert "eta" in field_error(page, "hp_eta")
    page.fill("#f-hp_eta", "0.3")
    page.locator("#err-hp_eta .field-error").wait_for(state="detached")
    page.click("button[type=submit]")
    assert "at 'trainingJobName' failed to satisfy constraint: Member must satisfy regular expression pattern" in (
        field_error(page, "name")
    )
    assert "Value 'two' at 'resourceConfig.instanceCount' failed to satisfy constraint: Member must be an integer" in (
        field_error(page, "instance_count")
    )
    assert "Member must have value greater than or equal to 1" in field_error(page, "max_runtime")
    assert field_error(page, "output_path") == "Output path is required."  # not the pattern '' fails
    assert page.locator("#f-name").input_value() == "not a valid name!"  # the form keeps what was typed
    shot(page, "04-create-form-errors")


def test_sidebar_key_id_stays_on_one_line_and_the_icon_loads(page: Any, platform: RunningPlatform) -> None:
    failed: list[str] = []
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    sign_in(page, platform, "/console/models")
    who = page.locator("#signed-in-as")
    key_id = platform.session().get_credentials().access_key
    assert who.get_attribute("title") == key_id and who.inner_text() == key_id
    line = page.locator(".sidebar .who .muted").first.bounding_box()["height"]
    assert who.bounding_box()["height"] <= line * 1.2  # one line, cut with an ellipsis if it has to be
    assert who.evaluate("e => getComputedStyle(e).textOverflow") == "ellipsis"
    icon = page.evaluate(
        "fetch(document.querySelector('link[rel=icon]').href).then(r => [r.status, r.headers.get('content-type')])"
    )
    assert icon == [200, "image/svg+xml"]
    assert not failed, failed
    page.locator(".sidebar").screenshot(path=str(ARTIFACTS / "17-sidebar.png"))


def test_processing_job_page_follows_its_log(page: Any, platform: RunningPlatform) -> None:
    script = "import time; [(print(f'processing step {i}', flush=True), time.sleep(1.5)) for i in (1, 2, 3)]"
    account = platform.session().client("sts").get_caller_identity()["Account"]
    platform.session().client("sagemaker").create_processing_job(
        ProcessingJobName="console-proc",
        ProcessingResources={"ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.large", "VolumeSizeInGB": 5}},
        AppSpecification={"ImageUri": "python:3.11", "ContainerEntrypoint": ["python3", "-c", script]},
        RoleArn=f"arn:aws:iam::{account}:role/OpenSageExecutionRole",
    )
    sign_in(page, platform, "/console/processing-jobs/console-proc")
    page.locator("#log").filter(has_text="processing step 1").wait_for(timeout=60_000)
    assert page.locator("#job-status .badge").inner_text() == "InProgress"
    shot(page, "18-processing-job-running")
    page.locator("#job-status .badge", has_text="Completed").wait_for(timeout=60_000)
    page.locator("h2 .live").wait_for(state="detached")  # the page reloads itself when the job ends
    page.locator("#log").filter(has_text="processing step 3").wait_for()  # read again from the head
    assert page.locator("#log").inner_text().split("\n")[:3] == [f"processing step {i}" for i in (1, 2, 3)]
    shot(page, "19-processing-job-completed")


def test_missing_resource_is_a_404_page_with_a_way_back(page: Any, platform: RunningPlatform) -> None:
    sign_in(page, platform)
    response = page.goto("/console/training-jobs/no-such-job")
    assert response.status == 404
    assert "There is no training job named “no-such-job”" in page.content()
    shot(page, "10-not-found")
    page.click("text=Back to the console home")
    page.wait_for_url("**/console/")
    assert page.goto("/console/no/such/page").status == 404


def test_post_without_the_csrf_token_is_rejected(page: Any, platform: RunningPlatform) -> None:
    sign_in(page, platform)
    no_token = page.request.post("/console/storage/console-tests/upload", multipart={"prefix": "x/"})
    assert no_token.status == 403 and "security token" in no_token.text()
    wrong = page.request.post("/console/training-jobs/new", form={"csrf": "forged", "name": "x"})
    assert wrong.status == 403
    assert "Traceback" not in wrong.text()


@pytest.mark.slow
def test_train_deploy_invoke_from_the_console(page: Any, platform: RunningPlatform) -> None:
    sign_in(page, platform)
    shot(page, "02-home-empty")

    # Create a training job from the form, picking the data in the S3 browser.
    page.click("text=Start a training job")
    page.fill("#f-name", "console-xgb")
    page.click("#f-train + button")
    page.click(f".picker a:has-text('{BUCKET}')")
    page.click(".picker a:has-text('data/')")
    page.click(".picker li:has-text('train/') [data-pick]")
    assert page.locator("#f-train").input_value() == f"s3://{BUCKET}/data/train/"
    page.fill("#f-validation", f"s3://{BUCKET}/data/validation/")
    page.select_option("#f-hp_objective", "binary:logistic")
    page.fill("#f-hp_eval_metric", "logloss")
    page.fill("#f-hp_num_round", "25")
    shot(page, "03-create-form")
    page.click("text=Start training")
    page.wait_for_url("**/console/training-jobs/console-xgb")

    # Watch it complete: the live log, then the charts of train/validation logloss per round.
    page.locator("#log").filter(has_text="train-logloss").wait_for(timeout=60_000)
    page.locator("#job-status .badge", has_text="Completed").wait_for(timeout=90_000)
    page.locator("#deploy").wait_for()  # the page reloads itself when the job ends
    page.locator("#metric-charts .uplot").first.wait_for()
    assert "logloss per round" in page.locator("#metric-charts").inner_text()
    assert int(page.locator("#metric-charts").get_attribute("data-points")) >= 50  # 25 rounds × 2 channels
    page.locator("#log").filter(has_text="validation-logloss").wait_for()
    assert "model.tar.gz" in page.locator("dl.facts").inner_text()
    shot(page, "05-training-job-completed")

    page.goto("/console/training-jobs")
    assert "console-xgb" in page.locator("table.list").inner_text()
    shot(page, "06-training-jobs")

    # Deploy it and invoke it from the endpoint page; the invocation count moves.
    page.goto("/console/training-jobs/console-xgb")
    page.fill("#f-endpoint_name", "console-ep")
    page.fill("#f-instance_count", "1")
    page.click("#deploy button[type=submit]")
    page.wait_for_url("**/console/endpoints/console-ep")
    page.locator("#endpoint-status .badge", has_text="InService").wait_for(timeout=60_000)
    page.locator("#health .badge.ok").first.wait_for()
    page.locator("#total-invocations", has_text="0").wait_for()
    page.fill("#f-body", "1.5,0.2,0,0\n-1.5,-0.2,0,0")
    page.click(".invoke button[type=submit]")
    answer = page.locator("#invoke-answer pre").inner_text()
    scores = [float(v) for v in re.split(r"[,\n]", answer.strip())]
    assert len(scores) == 2 and scores[0] > 0.5 > scores[1]
    page.locator("#total-invocations", has_text="1").wait_for(timeout=10_000)
    page.locator("#endpoint-charts .uplot").nth(2).wait_for()
    # Minutes without traffic are gaps (null, not spanned), not a line drawn across them.
    latency = page.evaluate(
        "(() => { const p = document.getElementById('endpoint-charts').plots[1];"
        " return { p50: p.data[1], spans: p.series.slice(1).map((s) => s.spanGaps) }; })()"
    )
    assert latency["spans"] == [False, False]
    assert latency["p50"][-1] is not None or latency["p50"][-2] is not None  # this minute (or the last, at a turn)
    assert latency["p50"].count(None) >= 28
    assert "real-time" in page.locator("#endpoint-types").inner_text()
    shot(page, "07-endpoint")

    # Batch transform with the same model: its page shows the model servers' log.
    features = "\n".join(",".join(f"{v:.3f}" for v in row) for row in np.random.default_rng(2).normal(size=(50, 4)))
    s3, sm = platform.session().client("s3"), platform.session().client("sagemaker")
    s3.put_object(Bucket=BUCKET, Key="data/batch/batch.csv", Body=features.encode())
    sm.create_transform_job(
        TransformJobName="console-tf",
        ModelName="console-ep",
        TransformInput={
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/data/batch/"}},
            "ContentType": "text/csv",
            "SplitType": "Line",
        },
        TransformOutput={"S3OutputPath": f"s3://{BUCKET}/batch-out/"},
        TransformResources={"InstanceType": "ml.m5.large", "InstanceCount": 1},
    )
    page.goto("/console/transform-jobs/console-tf")
    page.locator("#job-status .badge", has_text="Completed").wait_for(timeout=90_000)
    page.locator("h2 .live").wait_for(state="detached")  # the page reloads itself when the job ends
    page.wait_for_function("document.getElementById('log').textContent.trim().length > 0", timeout=20_000)
    shot(page, "20-transform-job")

    for path, name in (
        ("/console/", "08-home"),
        ("/console/endpoints", "09-endpoints"),
        ("/console/models", "11-models"),
        ("/console/models/console-ep", "12-model"),
        ("/console/processing-jobs", "13-processing-jobs"),
        ("/console/transform-jobs", "14-transform-jobs"),
        ("/console/storage", "15-storage"),
        (f"/console/storage/{BUCKET}?prefix=data/train/", "16-storage-prefix"),
    ):
        assert page.goto(path).status == 200, path
        shot(page, name)
    page.goto("/console/endpoints")
    assert page.locator("tr:has-text('console-ep') .badge.type").inner_text() == "real-time"

    # Upload through the storage page, then download it again.
    page.goto(f"/console/storage/{BUCKET}?prefix=data/")
    page.set_input_files("input[type=file]", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hi"}])
    page.click(".upload button[type=submit]")
    link = page.locator("tr:has-text('notes.txt') a:has-text('Download')")
    assert page.request.get(link.get_attribute("href")).body() == b"hi"
