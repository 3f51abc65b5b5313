"""The web console over real HTTP (no browser): sign-in, sessions, CSRF, validation messages, error pages."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from helpers import ApiServer
from opensage.console import auth
from opensage.console.forms import TRAINING_PATHS, field_errors
from opensage.errors import ServiceError


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, html[:500]
    return match.group(1)


@pytest.fixture
def client(api: ApiServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api.url, follow_redirects=False, timeout=30) as c:
        yield c


@pytest.fixture
def signed_in(api: ApiServer, client: httpx.Client) -> httpx.Client:
    token = _csrf(client.get("/console/signin").text)
    r = client.post(
        "/console/signin",
        data={"csrf": token, "access_key_id": api.access_key_id, "secret": api.secret, "next": "/console/models"},
    )
    assert r.status_code == 303 and r.headers["location"] == "/console/models"
    return client


def test_password_hash_and_sessions(tmp_path: Path) -> None:
    stored = auth.hash_password("s3cret-pass")
    assert stored.startswith("scrypt$") and "s3cret" not in stored
    assert auth.verify_password("s3cret-pass", stored) and not auth.verify_password("other", stored)
    assert not auth.check_password(tmp_path, "s3cret-pass")  # none set yet
    auth.set_password(tmp_path, "s3cret-pass")
    assert auth.check_password(tmp_path, "s3cret-pass") and not auth.check_password(tmp_path, "s3cret-pasS")
    assert (tmp_path / auth.PASSWORD_FILE).stat().st_mode & 0o777 == 0o600
    with pytest.raises(ValueError):
        auth.set_password(tmp_path, "short")
    signer = auth.SessionSigner(auth.session_key(tmp_path))
    assert auth.session_key(tmp_path) == signer.key  # created once per home
    session = signer.signed_in("AKIAEXAMPLE", "AKIAEXAMPLE")
    cookie = signer.dump(session)
    assert signer.load(cookie) == session
    payload, _, signature = cookie.partition(".")
    assert signer.load(payload[:-2] + "xx." + signature) is None  # tampered
    assert signer.load(cookie, now=time.time() + auth.SIGNED_IN_TTL_S + 1) is None  # expired
    assert auth.SessionSigner(b"k" * 32).load(cookie) is None  # another key
    assert auth.csrf_ok(session, session.csrf) and not auth.csrf_ok(session, "x") and not auth.csrf_ok(session, None)


def test_api_validation_messages_map_to_fields() -> None:
    err = ServiceError(
        "ValidationException",
        "2 validation errors detected: Value 'a b' at 'trainingJobName' failed to satisfy constraint: Member must "
        "satisfy regular expression pattern: ^x$; Value 'two' at 'resourceConfig.instanceCount' failed to satisfy "
        "constraint: Member must be an integer",
    )
    errors = field_errors(err, TRAINING_PATHS)
    assert errors["name"] == [
        "Value 'a b' at 'trainingJobName' failed to satisfy constraint: Member must satisfy regular expression "
        "pattern: ^x$"
    ]
    assert errors["instance_count"][0].endswith("Member must be an integer")
    assert field_errors(ServiceError("ValidationException", "Something else."), TRAINING_PATHS) == {
        "_form": ["Something else."]
    }


def test_unauthenticated_requests_go_to_sign_in(client: httpx.Client) -> None:
    r = client.get("/console/training-jobs?status=Failed")
    assert r.status_code == 303
    assert r.headers["location"] == "/console/signin?next=/console/training-jobs%3Fstatus%3DFailed"
    assert client.get("/console").headers["location"] == "/console/"
    assert client.get("/console/training-jobs/x/log", headers={"accept": "text/event-stream"}).status_code == 401
    assert client.get("/console/static/console.css").status_code == 200  # assets need no session


def test_sign_in_rejects_bad_credentials_and_foreign_targets(api: ApiServer, client: httpx.Client) -> None:
    token = _csrf(client.get("/console/signin").text)
    bad = client.post("/console/signin", data={"csrf": token, "access_key_id": api.access_key_id, "secret": "no"})
    assert bad.status_code == 401 and "not valid" in bad.text
    r = client.post(
        "/console/signin",
        data={"csrf": token, "access_key_id": api.access_key_id, "secret": api.secret, "next": "https://evil.test/"},
    )
    assert r.status_code == 303 and r.headers["location"] == "/console/"
    assert client.get("/console/models").status_code == 200


def test_sign_in_needs_the_forms_csrf_token(api: ApiServer, client: httpx.Client) -> None:
    client.get("/console/signin")
    r = client.post("/console/signin", data={"access_key_id": api.access_key_id, "secret": api.secret})
    assert r.status_code == 403 and "expired" in r.text


def test_posts_without_a_valid_csrf_token_are_rejected(signed_in: httpx.Client) -> None:
    for data in ({}, {"csrf": "forged"}):
        r = signed_in.post("/console/training-jobs/new", data={**data, "name": "x"})
        assert r.status_code == 403 and "security token" in r.text
    token = _csrf(signed_in.get("/console/models").text)
    check = "/console/training-jobs/new/check"
    r = signed_in.post(check, data={"algorithm": "xgboost"}, headers={"X-CSRF-Token": token})
    assert r.status_code == 200  # htmx sends the token as a header


def test_create_form_shows_the_api_validation_message_by_the_field(api: ApiServer, signed_in: httpx.Client) -> None:
    token = _csrf(signed_in.get("/console/training-jobs/new").text)
    form = {
        "csrf": token,
        "algorithm": "xgboost",
        "name": "bad_name",
        "train": "s3://b/train/",
        "content_type": "text/csv",
        "instance_type": "ml.m5.large",
        "instance_count": "1",
        "max_runtime": "0",
        "output_path": "s3://b/out",
        "role": api.platform.identity.default_role_arn,
        "hp_num_round": "10",
    }
    r = signed_in.post("/console/training-jobs/new", data=form)
    assert r.status_code == 400
    name_errors = re.search(r'<div id="err-name">(.*?)</div>', r.text, re.S).group(1)
    assert "Value &#39;bad_name&#39; at &#39;trainingJobName&#39; failed to satisfy constraint" in name_errors
    runtime_errors = re.search(r'<div id="err-max_runtime">(.*?)</div>', r.text, re.S).group(1)
    assert "Member must have value greater than or equal to 1" in runtime_errors
    assert 'value="bad_name"' in r.text
    form.update(name="ok-name", max_runtime="60", hp_eta="7")
    r = signed_in.post("/console/training-jobs/new", data=form)
    assert r.status_code == 400 and "eta" in re.search(r'<div id="err-hp_eta">(.*?)</div>', r.text, re.S).group(1)
    assert api.platform.store.get_resource("training-job", "ok-name") is None


def test_missing_resources_are_404_pages_with_a_way_back(signed_in: httpx.Client) -> None:
    for path, text in (
        ("/console/training-jobs/nope", "There is no training job named “nope”"),
        ("/console/endpoints/nope", "There is no endpoint named “nope”"),
        ("/console/models/nope", "There is no model named “nope”"),
        ("/console/transform-jobs/nope", "There is no transform job named “nope”"),
        ("/console/no/such/page", "There is no console page at this address"),
    ):
        r = signed_in.get(path)
        assert r.status_code == 404 and text in r.text, path
        assert 'href="/console/"' in r.text


def test_processing_jobs_page_works_with_or_without_the_operation(signed_in: httpx.Client) -> None:
    r = signed_in.get("/console/processing-jobs")
    assert r.status_code == 200 and "Processing jobs" in r.text
    assert signed_in.get("/console/processing-jobs/nope").status_code == 404


def test_server_errors_show_no_traceback(
    api: ApiServer, signed_in: httpx.Client, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    console = api.platform.console.state.console  # type: ignore[union-attr]

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(console.api, "listing", broken)
    r = signed_in.get("/console/models")
    assert r.status_code == 500
    assert "secret internals" not in r.text and "Traceback" not in r.text
    error_id = re.search(r"logged with id (\w+)", r.text).group(1)
    assert any(error_id in rec.getMessage() and rec.exc_info for rec in caplog.records)


def test_console_password_command(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    cmd = [sys.executable, "-m", "opensage", "console-password", "--home", str(home), "--password-stdin"]
    done = subprocess.run(cmd, input="long enough pw\n", capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert auth.check_password(home, "long enough pw")
    short = subprocess.run(cmd, input="short\n", capture_output=True, text=True, timeout=60)
    assert short.returncode == 1 and "at least 8 characters" in short.stderr
