"""The S3 front's request rewriting: the default KMS key is named, and the request signed again."""

from __future__ import annotations

from botocore.awsrequest import AWSRequest

from opensage.aws import sigv4
from opensage.aws.s3front import _signature, body_framing, rewrite_head

SECRETS = {"AKIAEXAMPLE": "secret"}


def _head(headers: dict[str, str], *, sign: bool = True, secret: str = "secret") -> bytes:
    from botocore.auth import S3SigV4Auth
    from botocore.credentials import Credentials

    request = AWSRequest("PUT", "http://127.0.0.1:9001/bucket-sse/a%20b/k?x-id=PutObject", data=b"x", headers=headers)
    request.headers["X-Amz-Content-SHA256"] = "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"
    if sign:
        S3SigV4Auth(Credentials("AKIAEXAMPLE", secret), "s3", "us-east-1").add_auth(request)
    request.headers["Host"] = "127.0.0.1:9001"
    lines = ["PUT /bucket-sse/a%20b/k?x-id=PutObject HTTP/1.1"] + [f"{k}: {v}" for k, v in request.headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _verifies(head: bytes) -> bool:
    lines = head[:-4].decode().split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    sig = sigv4.parse(headers, "")
    path, _, query = lines[0].split(" ")[1].partition("?")
    creq = sigv4.canonical_request(
        "PUT", path, query, headers, sig, headers["x-amz-content-sha256"], double_encode=False
    )

    return _signature(sig, SECRETS[sig.access_key], creq) == sig.signature


def test_aws_kms_without_a_key_gets_the_default_key_and_a_valid_signature() -> None:
    head = _head({"x-amz-server-side-encryption": "aws:kms", "Content-Length": "1"})
    assert _verifies(head)
    out = rewrite_head(head, SECRETS.get)
    assert b"x-amz-server-side-encryption-aws-kms-key-id: alias/aws/s3\r\n" in out and out.endswith(b"\r\n\r\n")
    assert (
        b"x-amz-server-side-encryption-aws-kms-key-id;" in out or b";x-amz-server-side-encryption-aws-kms-key-id" in out
    )
    assert _verifies(out)
    assert body_framing(out) == (1, False)


def test_other_requests_pass_untouched() -> None:
    named = _head({"x-amz-server-side-encryption": "aws:kms", "x-amz-server-side-encryption-aws-kms-key-id": "k"})
    assert rewrite_head(named, SECRETS.get) == named
    aes = _head({"x-amz-server-side-encryption": "AES256"})
    assert rewrite_head(aes, SECRETS.get) == aes
    forged = _head({"x-amz-server-side-encryption": "aws:kms"}, secret="wrong")
    assert rewrite_head(forged, SECRETS.get) == forged  # never sign what did not verify
    unknown = _head({"x-amz-server-side-encryption": "aws:kms"})
    assert rewrite_head(unknown, {}.get) == unknown
    unsigned = _head({"x-amz-server-side-encryption": "aws:kms"}, sign=False)
    assert rewrite_head(unsigned, SECRETS.get) == unsigned


def test_body_framing() -> None:
    assert body_framing(b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n") == (0, True)
    assert body_framing(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") == (0, False)
