"""AWS KMS, the part object encryption needs: symmetric keys, aliases, data keys, envelope encryption.

The embedded object store asks this service for the data keys of ``aws:kms`` objects (SSE-KMS), so
what it stores stays readable for as long as the platform's metadata store and master key live.

Key material is 256 random bits per key, kept in the metadata store sealed with the home's master
key (as secret access keys are). A ciphertext blob names its key, so ``Decrypt`` needs no key id::

    b"OSK1" | key id (36 ASCII bytes) | nonce (12 bytes) | AES-256-GCM(plaintext) with its tag

The encryption context is bound as GCM associated data (canonical JSON, sorted keys), so a blob
decrypts only under the context it was made with, as in AWS.

The AWS managed key for S3, ``alias/aws/s3``, is created the first time a request names it.

LIMITATIONS: symmetric ``SYMMETRIC_DEFAULT`` keys only (no asymmetric, HMAC, imported or multi-region
keys); no key policies or grants (every access key may use every key); no key rotation; keys cannot
be deleted (objects encrypted under them would be lost), only disabled.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import uuid
from collections.abc import Callable
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from opensage.aws.context import RequestContext
from opensage.errors import AlreadyExists, ServiceError
from opensage.store.entities import Resource
from opensage.store.sql import SqlStore

KEY_KIND = "kms-key"
ALIAS_KIND = "kms-alias"
S3_ALIAS = "alias/aws/s3"
AWS_ALIAS_PREFIX = "alias/aws/"
BLOB_MAGIC = b"OSK1"
_KEY_ID_LEN = 36
_NONCE_LEN = 12
_MAX_PLAINTEXT = 4096
_DATA_KEY_BYTES = {"AES_256": 32, "AES_128": 16}
_KEY_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_ARN = re.compile(r"arn:aws:kms:[^:]*:\d{12}:(key|alias)/(.+)")
_MANAGED_DESCRIPTIONS = {S3_ALIAS: "Default key that protects my S3 objects when no other key is defined"}


def _not_found(what: str) -> ServiceError:
    return ServiceError("NotFoundException", what)


def _invalid_ciphertext() -> ServiceError:
    return ServiceError("InvalidCiphertextException", "The ciphertext is invalid or was made under another context.")


def encryption_aad(context: dict[str, str] | None) -> bytes:
    """The associated data that binds an encryption context: canonical JSON (sorted, compact), or nothing."""
    if not context:
        return b""
    return json.dumps(context, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def seal_blob(key_id: str, material: bytes, plaintext: bytes, context: dict[str, str] | None) -> bytes:
    """A self-describing ciphertext blob for ``plaintext`` under ``material`` (see the module docstring)."""
    nonce = os.urandom(_NONCE_LEN)
    aad = key_id.encode() + encryption_aad(context)
    return BLOB_MAGIC + key_id.encode() + nonce + AESGCM(material).encrypt(nonce, plaintext, aad)


def blob_key_id(blob: bytes) -> str:
    """The key id a blob names.

    Raises:
        ServiceError: InvalidCiphertextException when the blob is not one of ours.
    """
    header = len(BLOB_MAGIC) + _KEY_ID_LEN
    if len(blob) < header + _NONCE_LEN + 16 or not blob.startswith(BLOB_MAGIC):
        raise _invalid_ciphertext()
    key_id = blob[len(BLOB_MAGIC) : header].decode("ascii", "replace")
    if not _KEY_ID.fullmatch(key_id):
        raise _invalid_ciphertext()
    return key_id


def open_blob(material: bytes, blob: bytes, context: dict[str, str] | None) -> bytes:
    """The plaintext of a blob made by :func:`seal_blob`.

    Raises:
        ServiceError: InvalidCiphertextException for a wrong key, context or a damaged blob.
    """
    key_id = blob_key_id(blob)
    header = len(BLOB_MAGIC) + _KEY_ID_LEN
    nonce, sealed = blob[header : header + _NONCE_LEN], blob[header + _NONCE_LEN :]
    try:
        return AESGCM(material).decrypt(nonce, sealed, key_id.encode() + encryption_aad(context))
    except InvalidTag as exc:
        raise _invalid_ciphertext() from exc


def key_metadata(resource: Resource) -> dict[str, Any]:
    """DescribeKey's ``KeyMetadata`` for a stored key (never its material)."""
    return dict(resource.data["KeyMetadata"])


class KmsProvider:
    """Symmetric keys and aliases in the metadata store; envelope encryption with AES-256-GCM."""

    def __init__(self, store: SqlStore, clock: Callable[[], dt.datetime]) -> None:
        self.store = store
        self.clock = clock

    # --- keys -------------------------------------------------------------------------------------

    def create_key(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        spec = request.get("KeySpec") or request.get("CustomerMasterKeySpec") or "SYMMETRIC_DEFAULT"
        usage = request.get("KeyUsage") or "ENCRYPT_DECRYPT"
        if spec != "SYMMETRIC_DEFAULT" or usage != "ENCRYPT_DECRYPT":
            raise ServiceError(
                "UnsupportedOperationException",
                f"OpenSage KMS makes SYMMETRIC_DEFAULT ENCRYPT_DECRYPT keys only, not {spec} {usage}.",
            )
        if request.get("Origin", "AWS_KMS") != "AWS_KMS" or request.get("MultiRegion"):
            raise ServiceError("UnsupportedOperationException", "OpenSage KMS makes single-region AWS_KMS keys only.")
        resource = self._new_key(ctx, request.get("Description", ""), "CUSTOMER")
        return {"KeyMetadata": key_metadata(resource)}

    def describe_key(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        return {"KeyMetadata": key_metadata(self._resolve(ctx, request["KeyId"]))}

    def list_keys(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        rows = self.store.list_resources(KEY_KIND, sort_by="created_at", descending=False)
        return {"Keys": [{"KeyId": r.name, "KeyArn": r.arn} for r in rows], "Truncated": False}

    def enable_key(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        self._set_enabled(ctx, request["KeyId"], True)
        return {}

    def disable_key(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        self._set_enabled(ctx, request["KeyId"], False)
        return {}

    # --- aliases ----------------------------------------------------------------------------------

    def create_alias(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        name = request["AliasName"]
        if not name.startswith("alias/") or name.startswith(AWS_ALIAS_PREFIX):
            raise ServiceError(
                "InvalidAliasNameException", f"Alias {name} must start with alias/ and not with {AWS_ALIAS_PREFIX}."
            )
        target = self._resolve(ctx, request["TargetKeyId"], aliases=False)
        try:
            self._add_alias(ctx, name, target.name)
        except AlreadyExists as exc:
            raise ServiceError(
                "AlreadyExistsException", f"An alias with the name {ctx.arn('kms', name)} already exists"
            ) from exc
        return {}

    def list_aliases(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        rows = self.store.list_resources(ALIAS_KIND, sort_by="name", descending=False)
        aliases = [r.data for r in rows]
        if request.get("KeyId"):
            key_id = self._resolve(ctx, request["KeyId"], aliases=False).name
            aliases = [a for a in aliases if a.get("TargetKeyId") == key_id]
        return {"Aliases": aliases, "Truncated": False}

    # --- cryptography -----------------------------------------------------------------------------

    def encrypt(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        key = self._usable(ctx, request["KeyId"])
        blob = seal_blob(key.name, self._material(key), request["Plaintext"], request.get("EncryptionContext"))
        return {"CiphertextBlob": blob, "KeyId": key.arn, "EncryptionAlgorithm": "SYMMETRIC_DEFAULT"}

    def decrypt(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        blob = request.get("CiphertextBlob")
        if blob is None:  # optional in the model (for recipients), required by every call OpenSage serves
            raise ServiceError(
                "ValidationException",
                "1 validation error detected: Value null at 'ciphertextBlob' failed to satisfy constraint: "
                "Member must not be null",
            )
        key_id = blob_key_id(blob)
        if request.get("KeyId"):
            wanted = self._resolve(ctx, request["KeyId"])
            if wanted.name != key_id:
                raise ServiceError(
                    "IncorrectKeyException",
                    "The key ID in the request does not identify the key that made the ciphertext.",
                )
        key = self._usable(ctx, key_id)
        plaintext = open_blob(self._material(key), blob, request.get("EncryptionContext"))
        return {"Plaintext": plaintext, "KeyId": key.arn, "EncryptionAlgorithm": "SYMMETRIC_DEFAULT"}

    def generate_data_key(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        key = self._usable(ctx, request["KeyId"])
        plaintext = os.urandom(self._data_key_size(request))
        blob = seal_blob(key.name, self._material(key), plaintext, request.get("EncryptionContext"))
        return {"CiphertextBlob": blob, "Plaintext": plaintext, "KeyId": key.arn}

    def generate_data_key_without_plaintext(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        out = self.generate_data_key(ctx, request)
        del out["Plaintext"]
        return out

    def generate_random(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        return {"Plaintext": os.urandom(request.get("NumberOfBytes") or 32)}

    # --- helpers ----------------------------------------------------------------------------------

    @staticmethod
    def _data_key_size(request: dict[str, Any]) -> int:
        spec, size = request.get("KeySpec"), request.get("NumberOfBytes")
        if (spec is None) == (size is None):
            raise ServiceError("ValidationException", "Specify either KeySpec or NumberOfBytes, not both or neither.")
        return _DATA_KEY_BYTES[spec] if spec else int(size or 0)

    def _new_key(self, ctx: RequestContext, description: str, manager: str) -> Resource:
        key_id = str(uuid.uuid4())
        now = self.clock()
        arn = ctx.arn("kms", f"key/{key_id}")
        metadata = {
            "AWSAccountId": ctx.account_id,
            "KeyId": key_id,
            "Arn": arn,
            "CreationDate": now,
            "Enabled": True,
            "Description": description,
            "KeyUsage": "ENCRYPT_DECRYPT",
            "KeyState": "Enabled",
            "Origin": "AWS_KMS",
            "KeyManager": manager,
            "CustomerMasterKeySpec": "SYMMETRIC_DEFAULT",
            "KeySpec": "SYMMETRIC_DEFAULT",
            "EncryptionAlgorithms": ["SYMMETRIC_DEFAULT"],
            "MultiRegion": False,
        }
        sealed = self.store.seal(AESGCM.generate_key(bit_length=256))
        data = {"KeyMetadata": {**metadata, "CreationDate": now.timestamp()}, "Material": sealed.decode()}
        return self.store.create_resource(Resource(KEY_KIND, key_id, arn, "Enabled", now, now, data))

    def _add_alias(self, ctx: RequestContext, name: str, key_id: str) -> None:
        now = self.clock()
        alias: dict[str, Any] = {
            "AliasName": name,
            "AliasArn": ctx.arn("kms", name),
            "TargetKeyId": key_id,
            "CreationDate": now.timestamp(),
            "LastUpdatedDate": now.timestamp(),
        }
        self.store.create_resource(Resource(ALIAS_KIND, name, alias["AliasArn"], "", now, now, alias))

    def _managed_key(self, ctx: RequestContext, alias: str) -> Resource:
        """The AWS managed key behind ``alias`` (e.g. alias/aws/s3), created on first use."""
        key = self._new_key(ctx, _MANAGED_DESCRIPTIONS[alias], "AWS")
        with contextlib.suppress(AlreadyExists):  # another request created it first: use theirs
            self._add_alias(ctx, alias, key.name)
            return key
        self.store.delete_resource(KEY_KIND, key.name)
        row = self.store.get_resource(ALIAS_KIND, alias)
        found = self.store.get_resource(KEY_KIND, row.data["TargetKeyId"]) if row is not None else None
        if found is None:
            raise _not_found(f"Alias {ctx.arn('kms', alias)} is not found.")
        return found

    def _resolve(self, ctx: RequestContext, key: str, aliases: bool = True) -> Resource:
        """The key named by a key id, key ARN, alias name or alias ARN.

        Raises:
            ServiceError: NotFoundException.
        """
        m = _ARN.fullmatch(key)
        name = (m.group(2) if m.group(1) == "key" else f"alias/{m.group(2)}") if m else key
        if name.startswith("alias/") and aliases:
            row = self.store.get_resource(ALIAS_KIND, name)
            if row is None:
                if name in _MANAGED_DESCRIPTIONS:
                    return self._managed_key(ctx, name)
                raise _not_found(f"Alias {ctx.arn('kms', name)} is not found.")
            name = row.data["TargetKeyId"]
        found = self.store.get_resource(KEY_KIND, name) if _KEY_ID.fullmatch(name) else None
        if found is None:
            raise _not_found(f"Key '{ctx.arn('kms', 'key/' + name)}' does not exist")
        return found

    def _usable(self, ctx: RequestContext, key: str) -> Resource:
        found = self._resolve(ctx, key)
        if found.status != "Enabled":
            raise ServiceError("DisabledException", f"{found.arn} is disabled.")
        return found

    def _material(self, key: Resource) -> bytes:
        return self.store.unseal(key.data["Material"].encode())

    def _set_enabled(self, ctx: RequestContext, key: str, enabled: bool) -> None:
        found = self._resolve(ctx, key)
        state = "Enabled" if enabled else "Disabled"
        metadata = {**found.data["KeyMetadata"], "Enabled": enabled, "KeyState": state}
        self.store.update_resource(
            KEY_KIND, found.name, data={**found.data, "KeyMetadata": metadata}, status=state, now=self.clock()
        )
