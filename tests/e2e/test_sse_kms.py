"""SSE-KMS on the embedded store as the SageMaker SDK uses it: ``aws:kms`` with no key named, across a restart."""

from __future__ import annotations

import io
from pathlib import Path

from helpers import free_base_port, running_platform


def test_aws_kms_objects_stay_readable_across_a_restart(tmp_path: Path) -> None:
    home, aws, port = tmp_path / "home", tmp_path / "aws", free_base_port()
    payload = b"sourcedir.tar.gz bytes " * 1000
    with running_platform(home, aws, port=port) as platform:
        session = platform.session()
        s3, kms = session.client("s3"), session.client("kms")
        s3.create_bucket(Bucket="bucket-sse")
        put = s3.put_object(Bucket="bucket-sse", Key="k", Body=payload, ServerSideEncryption="aws:kms")
        managed = kms.describe_key(KeyId="alias/aws/s3")["KeyMetadata"]
        assert put["ServerSideEncryption"] == "aws:kms" and put["SSEKMSKeyId"] == managed["Arn"]
        # what sagemaker.fw_utils.tar_and_upload_dir does (S3Transfer with ExtraArgs)
        s3.upload_fileobj(
            io.BytesIO(b"tar"), "bucket-sse", "code/sourcedir.tar.gz", {"ServerSideEncryption": "aws:kms"}
        )
        own = kms.create_key(Description="team")["KeyMetadata"]
        s3.put_object(
            Bucket="bucket-sse", Key="own", Body=b"own", ServerSideEncryption="aws:kms", SSEKMSKeyId=own["Arn"]
        )
        s3.put_object(Bucket="bucket-sse", Key="plain", Body=b"plain")
        head = s3.head_object(Bucket="bucket-sse", Key="k")
        assert head["ServerSideEncryption"] == "aws:kms"
        assert s3.get_object(Bucket="bucket-sse", Key="k")["Body"].read() == payload
        assert kms.list_aliases(KeyId=managed["KeyId"])["Aliases"][0]["AliasName"] == "alias/aws/s3"
    with running_platform(home, aws, port=port) as platform:
        s3 = platform.session().client("s3")
        assert s3.get_object(Bucket="bucket-sse", Key="k")["Body"].read() == payload
        assert s3.get_object(Bucket="bucket-sse", Key="code/sourcedir.tar.gz")["Body"].read() == b"tar"
        assert s3.get_object(Bucket="bucket-sse", Key="own")["Body"].read() == b"own"
        assert s3.get_object(Bucket="bucket-sse", Key="plain")["Body"].read() == b"plain"
        assert s3.head_object(Bucket="bucket-sse", Key="own")["SSEKMSKeyId"] == own["Arn"]
