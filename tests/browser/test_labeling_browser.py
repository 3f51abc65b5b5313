"""The labeling worker portal in a real browser: two work team members sign in and label 20 images by clicking, their
answers are consolidated, and a bounding box drawn with the mouse lands in the output manifest.

Screenshots land in ``test-artifacts/console/`` (or ``$OPENSAGE_TEST_ARTIFACTS``)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import RunningPlatform, running_platform
from labeling_kit import labeling_request, make_team, png, put_job_files, read_manifest, wait_job

CHROMIUM = "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip(
        f"browser tests need Debian's Chromium at {CHROMIUM} (apt-get install -y chromium)", allow_module_level=True
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="browser tests need `pip install playwright`")

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
ARTIFACTS = Path(os.environ.get("OPENSAGE_TEST_ARTIFACTS", Path(__file__).parents[2] / "test-artifacts")) / "console"
BUCKET = "labeling-browser"
COLORS = {"red": (220, 40, 40), "blue": (40, 60, 220)}


@pytest.fixture(scope="module")
def pickers(platform: RunningPlatform) -> dict[str, Any]:
    return make_team(platform.session(), "pickers", ["ana", "ben"])


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    root = tmp_path_factory.mktemp("labeling-browser")
    with running_platform(root / "home", root / "aws") as running:
        running.session().client("s3").create_bucket(Bucket=BUCKET)
        yield running


def _role(platform: RunningPlatform) -> str:
    account = platform.session().client("sts").get_caller_identity()["Account"]
    return f"arn:aws:iam::{account}:role/OpenSageExecutionRole"


def _sign_in(browser: Any, platform: RunningPlatform, username: str, password: str) -> Any:
    page = browser.new_context(base_url=platform.api_url, viewport={"width": 1100, "height": 900}).new_page()
    page.goto("/_opensage/labeling/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_selector("h1:text('Jobs')")
    return page


def _console(browser: Any, platform: RunningPlatform) -> Any:
    credentials = platform.session().get_credentials()
    page = browser.new_context(base_url=platform.api_url, viewport={"width": 1300, "height": 900}).new_page()
    page.goto("/console/labeling-jobs")
    page.fill("input[name=access_key_id]", credentials.access_key)
    page.fill("input[name=secret]", credentials.secret_key)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/console/labeling-jobs$"))
    return page


def _label(page: Any, job: str, choose: Any) -> int:
    """Label every object the portal gives this worker in ``job``, by clicking; returns how many."""
    page.goto(f"/_opensage/labeling/jobs/{job}")
    done = 0
    while True:
        page.wait_for_function("document.getElementById('status').textContent.startsWith('Object') || "
                               "document.getElementById('status').textContent.includes('no task')")  # fmt: skip
        status = page.inner_text("#status")
        if "no task" in status:
            return done
        index = int(status.split()[-1])
        page.wait_for_function("document.querySelector('#stage img') && document.querySelector('#stage img').complete")
        page.check(f"input[name=label][value={choose(index)}]")
        page.click("#submit")
        page.wait_for_function(f"!document.getElementById('status').textContent.endsWith(' {index}')")
        done += 1


def test_two_workers_label_images_in_the_browser(platform: RunningPlatform, pickers: dict[str, Any]) -> None:
    session = platform.session()
    sm, s3 = session.client("sagemaker"), session.client("s3")
    team = pickers
    truth = {i: ("red" if i % 3 else "blue") for i in range(20)}
    for i, color in truth.items():
        s3.put_object(Bucket=BUCKET, Key=f"images/{i}.png", Body=png(32, 24, COLORS[color]), ContentType="image/png")
    name = "colours"
    lines = [{"source-ref": f"s3://{BUCKET}/images/{i}.png"} for i in range(20)]
    put_job_files(s3, BUCKET, name, lines, ["red", "blue"])
    sm.create_labeling_job(**labeling_request(name, team["arn"], _role(platform), BUCKET, "ImageMultiClass", workers=2))
    wait_job(sm, name, ("InProgress",))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    other = {"red": "blue", "blue": "red"}
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        errors: list[str] = []
        ana = _sign_in(browser, platform, "ana", team["password"])
        ana.on("pageerror", lambda exc: errors.append(str(exc)))
        assert ana.locator("text=Label colours").count() == 1
        ana.screenshot(path=str(ARTIFACTS / "60-labeling-jobs.png"), full_page=True)
        ana.click("a.start")
        ana.wait_for_selector("#stage img")
        assert "Pick the one label that fits." in ana.inner_text("#guide")  # from the job's worker template
        ana.screenshot(path=str(ARTIFACTS / "61-labeling-task.png"), full_page=True)
        assert _label(ana, name, lambda i: truth[i]) == 20
        ben = _sign_in(browser, platform, "ben", team["password"])
        ben.on("pageerror", lambda exc: errors.append(str(exc)))
        assert _label(ben, name, lambda i: other[truth[i]] if i % 5 == 0 else truth[i]) == 20
        wait_job(sm, name, ("Completed",), timeout=30)
        console = _console(browser, platform)
        console.goto("/console/labeling-jobs")
        assert "20 / 20" in console.inner_text("#labeling-jobs")
        assert console.get_attribute("#portal", "href") == platform.api_url + "/_opensage/labeling/"
        console.click(f"#labeling-jobs >> text={name}")
        console.wait_for_selector("#counters")
        assert console.locator("#progress polyline").count() == 2 and "20 of 20" in console.inner_text("#counters")
        assert f"output/{name}/manifests/output/output.manifest" in console.inner_text("#output")
        console.screenshot(path=str(ARTIFACTS / "63-labeling-job.png"), full_page=True)
        assert errors == []
        browser.close()
    desc = wait_job(sm, name, ("Completed",), timeout=30)
    assert desc["LabelCounters"] == {"TotalLabeled": 20, "HumanLabeled": 20, "MachineLabeled": 0,
                                     "FailedNonRetryableError": 0, "Unlabeled": 0}  # fmt: skip
    lines = {int(re.search(r"/(\d+)\.png", x["source-ref"]).group(1)): x  # type: ignore[union-attr]
             for x in read_manifest(s3, desc["LabelingJobOutput"]["OutputDatasetS3Uri"])}  # fmt: skip
    assert sorted(lines) == list(range(20))
    for i, line in lines.items():
        meta = line["label-metadata"]
        assert meta["class-name"] == truth[i] and line["label"] == ["red", "blue"].index(truth[i])
        assert meta["confidence"] == (0.5 if i % 5 == 0 else 1.0)  # a tie goes to the label answered first
        assert meta["type"] == "groundtruth/image-classification" and meta["human-annotated"] == "yes"
    responses = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"output/{name}/annotations/worker-response/")
    assert responses["KeyCount"] == 20


def test_a_bounding_box_drawn_with_the_mouse(platform: RunningPlatform, pickers: dict[str, Any]) -> None:
    session = platform.session()
    sm, s3 = session.client("sagemaker"), session.client("s3")
    team = make_team(session, "boxers", ["cy"], pool=pickers["pool"], client=pickers["client"])
    s3.put_object(Bucket=BUCKET, Key="boxes/one.png", Body=png(200, 100, (250, 250, 250)), ContentType="image/png")
    name = "boxes"
    put_job_files(s3, BUCKET, name, [{"source-ref": f"s3://{BUCKET}/boxes/one.png"}], ["cat", "dog"])
    sm.create_labeling_job(**labeling_request(name, team["arn"], _role(platform), BUCKET, "BoundingBox"))
    wait_job(sm, name, ("InProgress",))
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = _sign_in(browser, platform, "cy", team["password"])
        page.goto(f"/_opensage/labeling/jobs/{name}")
        page.wait_for_function("document.querySelector('#stage img') && document.querySelector('#stage img').complete")
        page.check("input[name=tool][value=dog]")
        img = page.locator("#stage img").bounding_box()
        scale = img["width"] / 200
        page.mouse.move(img["x"] + 20 * scale, img["y"] + 10 * scale)
        page.mouse.down()
        page.mouse.move(img["x"] + 80 * scale, img["y"] + 50 * scale, steps=5)
        page.mouse.up()
        assert "dog: 60×40 at (20, 10)" in page.inner_text("#marks")
        page.screenshot(path=str(ARTIFACTS / "62-labeling-box.png"), full_page=True)
        page.click("#submit")
        page.wait_for_selector("text=no task")
        browser.close()
    desc = wait_job(sm, name, ("Completed",), timeout=30)
    (line,) = read_manifest(s3, desc["LabelingJobOutput"]["OutputDatasetS3Uri"])
    (box,) = line["label"]["annotations"]
    assert box["class_id"] == 1 and abs(box["left"] - 20) <= 1 and abs(box["top"] - 10) <= 1
    assert abs(box["width"] - 60) <= 1 and abs(box["height"] - 40) <= 1
    assert line["label"]["image_size"] == [{"width": 200, "height": 100, "depth": 3}]
    assert line["label-metadata"]["class-map"] == {"1": "dog"} and line["label-metadata"]["type"] == (
        "groundtruth/object-detection"
    )

