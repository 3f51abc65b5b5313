"""A closed-loop load of SigV4-signed requests: sign once with botocore, replay with wrk.

wrk cannot sign; the server verifies every request's signature in full (there is no cache and no
replay check), so one request signed a moment before the run measures the whole signed path.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

LUA = Path(__file__).with_name("signed_post.lua")


@dataclass(frozen=True)
class Signed:
    url: str
    body: bytes
    headers: dict[str, str]


def sign(
    url: str, body: bytes, headers: dict[str, str], service: str, key: tuple[str, str], region: str = "us-east-1"
) -> Signed:
    request = AWSRequest(method="POST", url=url, data=body, headers=headers)
    SigV4Auth(Credentials(*key), service, region).add_auth(request)
    out = {k: v for k, v in request.headers.items()}
    out.setdefault("Host", urlsplit(url).netloc)
    return Signed(url, body, out)


def wrk(signed: Signed, concurrency: int, duration: float) -> dict:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    with tempfile.TemporaryDirectory() as tmp:
        body, headers = Path(tmp) / "body", Path(tmp) / "headers"
        body.write_bytes(signed.body)
        headers.write_text("".join(f"{k}: {v}\n" for k, v in signed.headers.items()))
        out = subprocess.run(
            [
                "wrk",
                "-t1",
                f"-c{concurrency}",
                f"-d{int(duration)}s",
                "--timeout",
                "30s",
                "-s",
                str(LUA),
                signed.url,
                "--",
                str(body),
                str(headers),
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    line = next(x for x in out.splitlines() if x.startswith("WRKJSON "))
    result = json.loads(line[len("WRKJSON ") :])
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    result["errors"] = sum(result[k] for k in ("err_connect", "err_read", "err_write", "err_status", "err_timeout"))
    return result
