"""The platform's S3 client: one way to build it, one way to wait for an endpoint to answer."""

from __future__ import annotations

import http.client
import time
from typing import Any
from urllib.parse import urlsplit

import boto3
from botocore.config import Config

CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 60.0
MAX_ATTEMPTS = 5


def s3_client(endpoint_url: str, access_key: str, secret_key: str, region: str) -> Any:
    """A boto3 S3 client for ``endpoint_url`` with path-style addressing and SigV4.

    A fresh session per client keeps boto3's module-level default session out of the picture
    (and makes the client safe to build from any thread). Checksums are only sent or checked
    when an operation requires them, which S3-compatible stores handle best.
    """
    config = Config(
        signature_version="s3v4",
        s3={"addressing_style": "path"},
        retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"},
        connect_timeout=CONNECT_TIMEOUT_S,
        read_timeout=READ_TIMEOUT_S,
        tcp_keepalive=True,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    session = boto3.session.Session()
    return session.client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=region,
        config=config,
    )


def s3_answers(endpoint_url: str, timeout: float = 1.0, path: str = "/") -> bool:
    """True when an HTTP server answers at ``endpoint_url`` (any status; no proxy is used)."""
    parts = urlsplit(endpoint_url)
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = cls(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    try:
        conn.request("GET", path)
        conn.getresponse().read()
        return True
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def wait_for_s3(endpoint_url: str, timeout: float = 30.0, interval: float = 0.1) -> None:
    """Block until ``endpoint_url`` answers HTTP.

    Raises:
        TimeoutError: nothing answered within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while not s3_answers(endpoint_url):
        if time.monotonic() >= deadline:
            raise TimeoutError(f"no S3 endpoint answered at {endpoint_url} within {timeout:g}s")
        time.sleep(interval)
