"""The web console over real HTTP (no browser): sign-in, sessions, CSRF, validation messages, error pages."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


def _sse(client: httpx.Client, path: str, until: str = "end", timeout: float = 90) -> list[tuple[str, Any]]:
    """The events of a server-sent event stream, up to and including the first ``until`` event."""
    events: list[tuple[str, Any]] = []
    kind = ""
    with client.stream("GET", path, headers={"accept": "text/event-stream"}, timeout=timeout) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: ") and kind:
                events.append((kind, json.loads(line.removeprefix("data: "))))
                if kind == until:
                    break
    return events


def _log_lines(events: list[tuple[str, Any]]) -> list[str]:
    return [e["m"] for kind, data in events if kind == "log" for e in data]


def _role(api: ApiServer) -> str:
    return f"arn:aws:iam::{api.platform.identity.account_id}:role/OpenSageExecutionRole"


IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"


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
    session = signer.signed_in("AKIAEXAMPLE", "AKIAEXAMPLE", lambda user, key, expires: "sid-1")
    cookie = signer.dump(session)
    assert session.sid == "sid-1"
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


def test_empty_required_fields_say_required(api: ApiServer, signed_in: httpx.Client) -> None:
    token = _csrf(signed_in.get("/console/training-jobs/new").text)
    form = {
        "csrf": token,
        "algorithm": "xgboost",
        "name": "  ",
        "train": "",
        "content_type": "text/csv",
        "instance_type": "ml.m5.large",
        "instance_count": "",
        "max_runtime": "60",
        "output_path": "s3://b/out",
        "role": api.platform.identity.default_role_arn,
        "hp_num_round": "10",
    }
    r = signed_in.post("/console/training-jobs/new", data=form)
    assert r.status_code == 400

    def errors(field: str) -> str:
        return re.search(rf'<div id="err-{field}">(.*?)</div>', r.text, re.S).group(1)

    assert re.findall(r'class="field-error"[^>]*>([^<]*)<', errors("name")) == ["Job name is required."]
    assert "Training data is required." in errors("train") and "regular expression" not in errors("train")
    assert "Instance count is required." in errors("instance_count") and "integer" not in errors("instance_count")
    assert "required" not in errors("max_runtime") and "required" not in errors("output_path")


def test_favicon_is_served(signed_in: httpx.Client) -> None:
    for path in ("/console/favicon.ico", "/console/static/favicon.svg"):
        r = signed_in.get(path)
        assert r.status_code == 200, path
        assert r.headers["content-type"].startswith("image/svg+xml") and r.text.startswith("<svg"), path
    html = signed_in.get("/console/models").text
    assert '<link rel="icon" href="/console/static/favicon.svg" type="image/svg+xml">' in html
    with httpx.Client(base_url=str(signed_in.base_url)) as anonymous:  # the sign-in page needs it too
        assert anonymous.get("/console/favicon.ico").status_code == 200


def test_sidebar_shows_the_whole_key_id_as_its_title(api: ApiServer, signed_in: httpx.Client) -> None:
    html = signed_in.get("/console/models").text
    who = re.search(r'<div class="who-line mono" id="signed-in-as" title="([^"]+)">([^<]+)</div>', html)
    assert who and who.group(1) == who.group(2) == api.access_key_id


def test_processing_job_page_follows_its_log(api: ApiServer, signed_in: httpx.Client) -> None:
    script = "import time; print('step one', flush=True); time.sleep(2); print('step two')"
    api.client("sagemaker").create_processing_job(
        ProcessingJobName="console-proc",
        ProcessingResources={"ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.large", "VolumeSizeInGB": 5}},
        AppSpecification={"ImageUri": "python:3.11", "ContainerEntrypoint": ["python3", "-c", script]},
        RoleArn=_role(api),
    )
    page = signed_in.get("/console/processing-jobs/console-proc")
    assert page.status_code == 200
    assert 'id="log" class="log" data-src="/console/processing-jobs/console-proc/log"' in page.text
    assert 'id="job-status" data-status="InProgress"' in page.text and '<span class="live">' in page.text

    events = _sse(signed_in, "/console/processing-jobs/console-proc/log")
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "reset" and kinds[-1] == "end"
    statuses = [data["status"] for kind, data in events if kind == "status"]
    assert statuses[0] == "InProgress" and statuses[-1] == "Completed"
    assert _log_lines(events) == ["step one", "step two"]
    first_line = next(i for i, (kind, data) in enumerate(events) if kind == "log")
    completed = next(i for i, (kind, data) in enumerate(events) if kind == "status" and data["status"] == "Completed")
    assert first_line < completed  # followed while it ran, not only read at the end

    done = signed_in.get("/console/processing-jobs/console-proc")
    assert 'data-status="Completed"' in done.text and '<span class="live">' not in done.text
    assert _log_lines(_sse(signed_in, "/console/processing-jobs/console-proc/log")) == ["step one", "step two"]


def test_transform_job_page_shows_its_log(api: ApiServer, signed_in: httpx.Client) -> None:
    sm, logs = api.client("sagemaker"), api.client("logs")
    sm.create_model(
        ModelName="console-tf-model",
        PrimaryContainer={"Image": IMAGE, "ModelDataUrl": "s3://nowhere/model.tar.gz"},
        ExecutionRoleArn=_role(api),
    )
    sm.create_transform_job(
        TransformJobName="console-tf",
        ModelName="console-tf-model",
        TransformInput={"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://nowhere/in/"}}},
        TransformOutput={"S3OutputPath": "s3://nowhere/out/"},
        TransformResources={"InstanceType": "ml.m5.large", "InstanceCount": 2},
    )
    sm.stop_transform_job(TransformJobName="console-tf")  # (this server has no object store to read from)
    # The model servers' output, in the streams the transform engine writes: <job>/<host>, one per instance.
    group = "/aws/sagemaker/TransformJobs"
    with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
        logs.create_log_group(logGroupName=group)
    for host in ("AllTraffic-1", "AllTraffic-2"):
        logs.create_log_stream(logGroupName=group, logStreamName=f"console-tf/{host}")
        logs.put_log_events(
            logGroupName=group,
            logStreamName=f"console-tf/{host}",
            logEvents=[{"timestamp": int(time.time() * 1000), "message": f"model server {host} ready"}],
        )
    page = signed_in.get("/console/transform-jobs/console-tf")
    assert page.status_code == 200 and 'data-src="/console/transform-jobs/console-tf/log"' in page.text
    lines = _log_lines(_sse(signed_in, "/console/transform-jobs/console-tf/log"))
    assert sorted(lines) == [
        "[AllTraffic-1] model server AllTraffic-1 ready",
        "[AllTraffic-2] model server AllTraffic-2 ready",
    ]
    assert signed_in.get("/console/transform-jobs/nope/log").status_code == 404


def test_endpoint_charts_get_gaps_for_minutes_without_traffic(api: ApiServer, signed_in: httpx.Client) -> None:
    sm = api.client("sagemaker")
    sm.create_model(ModelName="console-gaps", PrimaryContainer={"Image": IMAGE}, ExecutionRoleArn=_role(api))
    sm.create_endpoint_config(
        EndpointConfigName="console-gaps",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": "console-gaps",
                "InstanceType": "ml.m5.large",
                "InitialInstanceCount": 1,
            }
        ],
    )
    sm.create_endpoint(EndpointName="console-gaps", EndpointConfigName="console-gaps")
    # Two minutes with traffic, as the router records each invocation: 10 minutes ago (a 404 and a 200) and now.
    metrics, now = api.platform.metrics, time.time()
    busy = {int((now - 600) // 60) * 60, int(now // 60) * 60}
    for status, t in ((404, now - 600), (200, now - 600), (200, now)):
        metrics.record("console-gaps", "AllTraffic", status, 2000.0, 500.0, now=t)
    events = _sse(signed_in, "/console/endpoints/console-gaps/metrics", until="metrics")
    s = events[-1][1]["series"]
    assert len(s["x"]) == 30 and busy <= set(s["x"])
    for name in ("Invocations", "Invocation4XXErrors", "Invocation5XXErrors", "p50", "p99"):
        for minute, value in zip(s["x"], s[name], strict=True):
            assert (value is not None) == (minute in busy), (name, minute, value)
    at = {m: i for i, m in enumerate(s["x"])}
    ten_ago, this = at[min(busy)], at[max(busy)]
    assert s["Invocations"][ten_ago] == 2 and s["Invocations"][this] == 1
    assert s["Invocation4XXErrors"][ten_ago] == 1 and s["Invocation4XXErrors"][this] == 0  # a real 0, not a gap
    assert s["Invocation5XXErrors"][this] == 0 and s["p50"][this] == pytest.approx(2.5, rel=0.05)
    assert s["total"]["Invocations"] == 3


def test_endpoint_list_shows_each_endpoints_type(api: ApiServer, signed_in: httpx.Client) -> None:
    """Real-time through the API; async, serverless and multi-model configs have tests of their own, so
    those kinds are derived from stored documents in tests/unit/test_console_labels.py."""
    sm = api.client("sagemaker")
    sm.create_model(ModelName="console-single", PrimaryContainer={"Image": IMAGE}, ExecutionRoleArn=_role(api))
    instances = {"InstanceType": "ml.m5.large", "InitialInstanceCount": 1}
    sm.create_endpoint_config(
        EndpointConfigName="console-rt",
        ProductionVariants=[{"VariantName": "v", "ModelName": "console-single", **instances}],
    )
    sm.create_endpoint(EndpointName="console-rt", EndpointConfigName="console-rt")
    html = signed_in.get("/console/endpoints?name=console-").text
    assert "<th>Type</th>" in html
    rows = {
        m.group(1): re.findall(r'<span class="badge type">([^<]+)</span>', m.group(2))
        for m in re.finditer(r'<tr>\s*<td><a href="/console/endpoints/([^"]+)">.*?</a></td>(.*?)</tr>', html, re.S)
    }
    assert rows["console-rt"] == ["real-time"]
    detail = signed_in.get("/console/endpoints/console-rt").text
    assert re.search(r'id="endpoint-types"><span class="badge type">real-time</span>', detail)


def _sign_in(api: ApiServer, client: httpx.Client, **credentials: str) -> httpx.Response:
    token = _csrf(client.get("/console/signin").text)
    return client.post("/console/signin", data={"csrf": token, "next": "/console/models", **credentials})


def test_a_signed_out_sessions_copied_cookie_is_worthless(api: ApiServer, client: httpx.Client) -> None:
    assert _sign_in(api, client, access_key_id=api.access_key_id, secret=api.secret).status_code == 303
    copied = client.cookies.get("opensage_console")
    token = _csrf(client.get("/console/models").text)
    assert client.post("/console/signout", data={"csrf": token}).status_code == 303
    with httpx.Client(base_url=api.url, follow_redirects=False, timeout=30) as thief:
        thief.cookies.set("opensage_console", copied, path="/console")
        assert thief.get("/console/models").status_code == 303  # to the sign-in page


def test_deleting_the_sessions_access_key_ends_it(api: ApiServer, client: httpx.Client) -> None:
    from opensage.identity import create_access_key

    key = create_access_key(api.platform.store, api.platform.identity.account_id, "console-test")
    assert _sign_in(api, client, access_key_id=key.access_key_id, secret=key.secret_access_key).status_code == 303
    assert client.get("/console/models").status_code == 200
    api.platform.store.delete_access_key(key.access_key_id)  # what `opensage keys delete` does
    assert client.get("/console/models").status_code == 303  # not the platform key in its place


def test_a_new_console_password_ends_password_sessions(api: ApiServer, client: httpx.Client) -> None:
    home = api.platform.console.state.console.home  # type: ignore[union-attr]
    auth.set_password(home, "first password")
    assert _sign_in(api, client, password="first password").status_code == 303
    assert client.get("/console/models").status_code == 200
    auth.set_password(home, "second password")  # what `opensage console-password` does
    assert client.get("/console/models").status_code == 303


def test_failed_sign_ins_are_throttled_with_a_growing_delay(api: ApiServer) -> None:
    from opensage.console import sessions

    with httpx.Client(base_url=api.url, follow_redirects=False, timeout=30) as client:
        for _ in range(sessions.FREE_FAILURES + 1):
            assert _sign_in(api, client, access_key_id=api.access_key_id, secret="wrong").status_code == 401
        refused = _sign_in(api, client, access_key_id=api.access_key_id, secret=api.secret)  # even the right one
        assert refused.status_code == 429 and "Too many failed sign-ins" in refused.text
        assert int(refused.headers["retry-after"]) >= 1
        time.sleep(sessions.FIRST_DELAY_S + 0.1)
        assert _sign_in(api, client, access_key_id=api.access_key_id, secret=api.secret).status_code == 303
    with httpx.Client(base_url=api.url, follow_redirects=False, timeout=30) as again:
        # the success cleared the count: one more typo is not delayed
        assert _sign_in(api, again, access_key_id=api.access_key_id, secret="wrong").status_code == 401
        assert _sign_in(api, again, access_key_id=api.access_key_id, secret=api.secret).status_code == 303


def test_pages_carry_security_headers(signed_in: httpx.Client) -> None:
    r = signed_in.get("/console/models")
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert r.headers["x-frame-options"] == "DENY" and r.headers["cache-control"] == "no-store"
    assert signed_in.get("/console/signin").headers["cache-control"] == "no-store"
    static = signed_in.get("/console/static/console.css")
    assert static.status_code == 200 and "no-store" not in static.headers.get("cache-control", "")


def _http(sock: Any, request: bytes) -> bytes:
    """Send one request on ``sock`` and read its whole answer (Content-Length framed)."""
    sock.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection"
        body += chunk
    return head


def test_a_server_error_keeps_the_connection(
    api: ApiServer, signed_in: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket
    from urllib.parse import urlsplit

    console = api.platform.console.state.console  # type: ignore[union-attr]

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("broken on purpose")

    monkeypatch.setattr(console.api, "listing", broken)
    url = urlsplit(api.url)
    cookie = signed_in.cookies.get("opensage_console")
    request = (
        f"GET /console/models HTTP/1.1\r\nHost: {url.netloc}\r\nCookie: opensage_console={cookie}\r\n\r\n"
    ).encode()
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        assert _http(sock, request).startswith(b"HTTP/1.1 500")
        again = b"GET /console/static/console.css HTTP/1.1\r\nHost: x\r\n\r\n"
        assert _http(sock, again).startswith(b"HTTP/1.1 200")  # the same connection
