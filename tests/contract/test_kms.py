"""The KMS service through boto3's own client: keys, aliases, envelope encryption, the errors AWS gives."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from helpers import ApiServer, api_server
from opensage.providers.kms import blob_key_id


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    with api_server(tmp_path_factory.mktemp("kms") / "home") as running:
        yield running


@pytest.fixture(scope="module")
def kms(server: ApiServer) -> Any:
    return server.client("kms")


def _code(err: pytest.ExceptionInfo[ClientError]) -> str:
    return err.value.response["Error"]["Code"]


def test_encrypt_decrypt_round_trip_with_context(kms: Any) -> None:
    key = kms.create_key(Description="mine")["KeyMetadata"]
    assert key["KeyState"] == "Enabled" and key["KeyManager"] == "CUSTOMER" and key["Description"] == "mine"
    context = {"purpose": "test", "aws:s3:arn": "arn:aws:s3:::b/k"}
    out = kms.encrypt(KeyId=key["KeyId"], Plaintext=b"secret bytes", EncryptionContext=context)
    assert out["KeyId"] == key["Arn"] and blob_key_id(out["CiphertextBlob"]) == key["KeyId"]
    back = kms.decrypt(CiphertextBlob=out["CiphertextBlob"], EncryptionContext=dict(reversed(context.items())))
    assert back["Plaintext"] == b"secret bytes" and back["KeyId"] == key["Arn"]
    with pytest.raises(ClientError) as err:
        kms.decrypt(CiphertextBlob=out["CiphertextBlob"], EncryptionContext={"purpose": "other"})
    assert _code(err) == "InvalidCiphertextException"
    with pytest.raises(ClientError) as err:
        kms.decrypt(CiphertextBlob=out["CiphertextBlob"])
    assert _code(err) == "InvalidCiphertextException"
    with pytest.raises(ClientError) as err:
        kms.decrypt(CiphertextBlob=b"not a blob of ours at all, clearly not" * 2)
    assert _code(err) == "InvalidCiphertextException"


def test_generate_data_key_and_aws_managed_s3_key(kms: Any) -> None:
    out = kms.generate_data_key(KeyId="alias/aws/s3", KeySpec="AES_256", EncryptionContext={"a": "b"})
    assert len(out["Plaintext"]) == 32
    managed = kms.describe_key(KeyId="alias/aws/s3")["KeyMetadata"]
    assert managed["KeyManager"] == "AWS" and out["KeyId"] == managed["Arn"]
    assert kms.describe_key(KeyId=managed["Arn"])["KeyMetadata"]["KeyId"] == managed["KeyId"]
    back = kms.decrypt(CiphertextBlob=out["CiphertextBlob"], EncryptionContext={"a": "b"})
    assert back["Plaintext"] == out["Plaintext"]
    aliases = {a["AliasName"]: a for a in kms.list_aliases()["Aliases"]}
    assert aliases["alias/aws/s3"]["TargetKeyId"] == managed["KeyId"]
    assert managed["KeyId"] in [k["KeyId"] for k in kms.list_keys()["Keys"]]
    again = kms.generate_data_key_without_plaintext(KeyId="alias/aws/s3", NumberOfBytes=16)
    assert "Plaintext" not in again and blob_key_id(again["CiphertextBlob"]) == managed["KeyId"]


def test_aliases_and_disabled_keys(kms: Any) -> None:
    key = kms.create_key()["KeyMetadata"]
    kms.create_alias(AliasName="alias/team", TargetKeyId=key["KeyId"])
    assert kms.describe_key(KeyId="alias/team")["KeyMetadata"]["KeyId"] == key["KeyId"]
    with pytest.raises(ClientError) as err:
        kms.create_alias(AliasName="alias/team", TargetKeyId=key["KeyId"])
    assert _code(err) == "AlreadyExistsException"
    with pytest.raises(ClientError) as err:
        kms.create_alias(AliasName="alias/aws/mine", TargetKeyId=key["KeyId"])
    assert _code(err) == "InvalidAliasNameException"
    blob = kms.encrypt(KeyId="alias/team", Plaintext=b"x")["CiphertextBlob"]
    kms.disable_key(KeyId=key["KeyId"])
    with pytest.raises(ClientError) as err:
        kms.decrypt(CiphertextBlob=blob)
    assert _code(err) == "DisabledException"
    kms.enable_key(KeyId=key["Arn"])
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"x"


def test_unknown_keys_are_not_found(kms: Any) -> None:
    for key_id in ("1234abcd-12ab-34cd-56ef-1234567890ab", "alias/nobody", "health-check-dummy-key"):
        with pytest.raises(ClientError) as err:
            kms.describe_key(KeyId=key_id)
        assert _code(err) == "NotFoundException", key_id
    with pytest.raises(ClientError) as err:
        kms.generate_data_key(KeyId="alias/nobody", KeySpec="AES_256")
    assert _code(err) == "NotFoundException"


def test_key_material_is_sealed_in_the_store(server: ApiServer, kms: Any) -> None:
    key = kms.create_key()["KeyMetadata"]
    row = server.platform.store.get_resource("kms-key", key["KeyId"])
    assert row is not None
    material = server.platform.store.unseal(row.data["Material"].encode())
    assert len(material) == 32 and material not in row.data["Material"].encode()
    assert "Material" not in kms.describe_key(KeyId=key["KeyId"])["KeyMetadata"]
