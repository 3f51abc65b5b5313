"""SigV4 verification against botocore's own signer."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac

import pytest
from botocore.auth import S3SigV4Auth, SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from opensage.aws import sigv4

CREDS = Credentials("AKIATESTKEY000000001", "s3cr3t/With+Chars")


def _wire(request: AWSRequest) -> tuple[str, str, str, dict[str, str], bytes]:
    """What the server sees: method, raw path, raw query, lower-case headers, body."""
    from urllib.parse import urlsplit

    parts = urlsplit(request.url)
    headers = {k.lower(): v for k, v in request.headers.items()}
    headers.setdefault("host", parts.netloc)
    body = request.body or b""
    if isinstance(body, str):
        body = body.encode()
    return request.method, parts.path, parts.query, headers, body


def _check(request: AWSRequest, secret: str = CREDS.secret_key) -> str:
    method, path, query, headers, body = _wire(request)
    sig = sigv4.parse(headers, query)
    sigv4.check_time(sig, dt.datetime.now(dt.UTC))
    return sigv4.verify(sig, secret, method, path, query, headers, body)


def test_header_form_json_body() -> None:
    req = AWSRequest(
        "POST",
        "http://127.0.0.1:8780/",
        data=b'{"MaxResults": 5}',
        headers={"X-Amz-Target": "SageMaker.ListTrainingJobs"},
    )
    SigV4Auth(CREDS, "sagemaker", "us-east-1").add_auth(req)
    _check(req)


def test_path_with_characters_that_need_encoding() -> None:
    req = AWSRequest("POST", "http://127.0.0.1:8780/endpoints/my%20end%2Apoint/invocations", data=b"1,2,3")
    SigV4Auth(CREDS, "sagemaker", "eu-west-1").add_auth(req)
    _check(req)


def test_query_string_is_canonicalised() -> None:
    req = AWSRequest("GET", "http://127.0.0.1:8780/?Version=2011-06-15&Action=GetCallerIdentity&b=%20x")
    SigV4Auth(CREDS, "sts", "us-east-1").add_auth(req)
    _check(req)


def test_wrong_secret_and_tampering_are_rejected() -> None:
    req = AWSRequest("POST", "http://127.0.0.1:8780/", data=b"{}", headers={"X-Amz-Target": "SageMaker.X"})
    SigV4Auth(CREDS, "sagemaker", "us-east-1").add_auth(req)
    with pytest.raises(sigv4.SigV4Error) as exc:
        _check(req, secret="other")
    assert exc.value.kind == "mismatch"
    req.data = b'{"a": 1}'
    with pytest.raises(sigv4.SigV4Error):
        _check(req)


def test_unsigned_payload_is_refused_on_the_api_port() -> None:
    """AWS's JSON and query services sign the body's hash; a request signed as ``UNSIGNED-PAYLOAD`` fails."""
    req = AWSRequest(
        "POST",
        "http://127.0.0.1:8780/",
        data=b"Action=GetCallerIdentity&Version=2011-06-15",
        headers={"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD", "Content-Type": "application/x-www-form-urlencoded"},
    )
    SigV4Auth(CREDS, "sts", "us-east-1").add_auth(req)
    assert req.headers["X-Amz-Content-SHA256"] == "UNSIGNED-PAYLOAD"
    with pytest.raises(sigv4.SigV4Error) as exc:
        _check(req)
    assert exc.value.kind == "mismatch"


def test_declared_payload_hash_must_match_the_body() -> None:
    req = AWSRequest("PUT", "http://127.0.0.1:8781/bucket/key", data=b"body")
    S3SigV4Auth(CREDS, "s3", "us-east-1").add_auth(req)
    method, path, query, headers, _ = _wire(req)
    sig = sigv4.parse(headers, query)
    with pytest.raises(sigv4.SigV4Error) as exc:
        sigv4.verify(sig, CREDS.secret_key, method, path, query, headers, b"other body")
    assert exc.value.kind == "payload"


def test_presigned_url_and_expiry() -> None:
    req = AWSRequest("GET", "http://127.0.0.1:8780/?Action=GetCallerIdentity&Version=2011-06-15")
    SigV4QueryAuth(CREDS, "sts", "us-east-1", expires=60).add_auth(req)
    _check(req)
    _, _, query, headers, _ = _wire(req)
    sig = sigv4.parse(headers, query)
    assert sig.presigned and sig.expires == 60
    with pytest.raises(sigv4.SigV4Error) as exc:
        sigv4.check_time(sig, dt.datetime.now(dt.UTC) + dt.timedelta(seconds=120))
    assert exc.value.kind == "expired"


def test_stale_and_future_header_dates() -> None:
    req = AWSRequest("POST", "http://127.0.0.1:8780/", data=b"{}")
    SigV4Auth(CREDS, "sagemaker", "us-east-1").add_auth(req)
    _, _, query, headers, _ = _wire(req)
    sig = sigv4.parse(headers, query)
    now = dt.datetime.now(dt.UTC)
    with pytest.raises(sigv4.SigV4Error, match="Signature expired"):
        sigv4.check_time(sig, now + dt.timedelta(minutes=20))
    with pytest.raises(sigv4.SigV4Error, match="not yet current"):
        sigv4.check_time(sig, now - dt.timedelta(minutes=20))


@pytest.mark.parametrize("auth", ["", "AWS4-HMAC-SHA256 Credential=AK/20260101/us-east-1/sts", "Basic abc"])
def test_malformed_authorization(auth: str) -> None:
    headers = {"authorization": auth} if auth else {}
    with pytest.raises(sigv4.SigV4Error) as exc:
        sigv4.parse(headers, "")
    assert exc.value.kind == ("missing" if not auth else "incomplete")


def _chunk_sign(key: bytes, sig: sigv4.Signature, previous: str, data: bytes) -> str:
    sts = "\n".join(
        [
            "AWS4-HMAC-SHA256-PAYLOAD",
            sig.amz_date,
            sig.scope,
            previous,
            sigv4.EMPTY_SHA256,
            hashlib.sha256(data).hexdigest(),
        ]
    )
    return hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()


def test_aws_chunked_streaming_body() -> None:
    req = AWSRequest(
        "PUT", "http://127.0.0.1:8780/x", data=b"", headers={"X-Amz-Content-SHA256": sigv4.STREAMING_PAYLOAD}
    )
    S3SigV4Auth(CREDS, "s3", "us-east-1").add_auth(req)
    method, path, query, headers, _ = _wire(req)
    sig = sigv4.parse(headers, query)
    seed = sigv4.verify(sig, CREDS.secret_key, method, path, query, headers, b"")
    key = sigv4.signing_key(CREDS.secret_key, sig)
    body, previous = b"", seed
    for chunk in (b"hello ", b"world", b""):
        previous = _chunk_sign(key, sig, previous, chunk)
        body += f"{len(chunk):x};chunk-signature={previous}\r\n".encode() + chunk + b"\r\n"
    assert sigv4.decode_aws_chunked(body, CREDS.secret_key, sig, seed) == b"hello world"
    with pytest.raises(sigv4.SigV4Error):
        sigv4.decode_aws_chunked(body.replace(b"hello", b"HELLO"), CREDS.secret_key, sig, seed)
