"""What the notebook instance tests share: waiting on statuses, signing in with a presigned URL, running code
in a kernel over Jupyter's websocket."""

from __future__ import annotations

import base64
import datetime as dt
import json
import time
import uuid
from typing import Any

import httpx
import psutil
import pytest
from botocore.exceptions import ClientError
from websockets.sync.client import connect

from helpers import RunningPlatform

LOG_GROUP = "/aws/sagemaker/NotebookInstances"


def new_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def b64(script: str) -> str:
    return base64.b64encode(script.encode()).decode()


def error_of(call: Any, **kwargs: Any) -> dict[str, str]:
    with pytest.raises(ClientError) as err:
        call(**kwargs)
    return dict(err.value.response["Error"])


def sagemaker(platform: RunningPlatform) -> Any:
    return platform.session().client("sagemaker")


def role_arn(platform: RunningPlatform) -> str:
    account = platform.session().client("sts").get_caller_identity()["Account"]
    return f"arn:aws:iam::{account}:role/OpenSageExecutionRole"


def wait_status(sm: Any, name: str, wanted: tuple[str, ...], timeout: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        desc = sm.describe_notebook_instance(NotebookInstanceName=name)
        if desc["NotebookInstanceStatus"] in wanted:
            return dict(desc)
        assert desc["NotebookInstanceStatus"] != "Failed", desc
        assert time.monotonic() < deadline, desc
        time.sleep(0.5)


def wait_deleted(sm: Any, name: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            sm.describe_notebook_instance(NotebookInstanceName=name)
        except ClientError as exc:
            assert "RecordNotFound" in exc.response["Error"]["Message"]
            return
        time.sleep(0.3)
    raise AssertionError(f"{name} was not deleted")


def jupyter_pids(platform: RunningPlatform, name: str) -> list[int]:
    """The JupyterLab processes of instance ``name`` (their base URL names it)."""
    marker = f"--ServerApp.base_url=/_opensage/notebooks/{name}/"
    return [p.pid for p in psutil.process_iter(["cmdline"]) if marker in (p.info["cmdline"] or [])]


def sign_in(sm: Any, name: str) -> httpx.Client:
    """A browser-like client signed in through the presigned URL (it follows the redirect to the lab)."""
    url = sm.create_presigned_notebook_instance_url(NotebookInstanceName=name)["AuthorizedUrl"]
    client = httpx.Client(follow_redirects=True, trust_env=False, timeout=60)
    page = client.get(url)
    assert page.status_code == 200, page.text[:500]
    assert "JupyterLab" in page.text
    return client


def run_in_kernel(client: httpx.Client, base: str, code: str, timeout: float = 180) -> str:
    """Start a kernel through Jupyter's REST API, run ``code`` over the kernel's websocket; its stdout."""
    kernel = client.post(f"{base}api/kernels", json={"name": "python3"})
    assert kernel.status_code == 201, kernel.text
    kernel_id = kernel.json()["id"]
    cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
    ws_url = base.replace("http://", "ws://") + f"api/kernels/{kernel_id}/channels"
    msg_id, out = uuid.uuid4().hex, []
    message = {
        "header": {
            "msg_id": msg_id,
            "username": "test",
            "session": uuid.uuid4().hex,
            "msg_type": "execute_request",
            "version": "5.3",
            "date": dt.datetime.now(dt.UTC).isoformat(),
        },
        "parent_header": {},
        "metadata": {},
        "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {}},
        "channel": "shell",
        "buffers": [],
    }
    try:
        with connect(ws_url, additional_headers={"Cookie": cookie}, max_size=None, proxy=None) as ws:
            ws.send(json.dumps(message))
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                reply = json.loads(ws.recv(timeout=deadline - time.monotonic()))
                if reply.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind = reply["header"]["msg_type"]
                if kind == "stream":
                    out.append(reply["content"]["text"])
                elif kind == "error":
                    raise AssertionError("\n".join(reply["content"]["traceback"]))
                elif kind == "execute_reply":
                    return "".join(out)
            raise AssertionError(f"no reply within {timeout} s: {''.join(out)}")
    finally:
        client.delete(f"{base}api/kernels/{kernel_id}")


def wait_failed(sm: Any, name: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        desc = sm.describe_notebook_instance(NotebookInstanceName=name)
        if desc["NotebookInstanceStatus"] == "Failed":
            return dict(desc)
        assert desc["NotebookInstanceStatus"] == "Pending", desc
        assert time.monotonic() < deadline, desc
        time.sleep(0.3)
