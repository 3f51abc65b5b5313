"""The account, its default execution role and access keys: created on first start, kept in the store."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import secrets
import string
from dataclasses import dataclass
from urllib.parse import quote

from opensage.errors import AlreadyExists
from opensage.store.entities import AccessKey, Resource
from opensage.store.sql import SqlStore

ROLE_KIND = "iam-role"
DEFAULT_ROLE = "OpenSageExecutionRole"
DEFAULT_SESSION = "opensage"
SAGEMAKER_TRUST_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}
_UPPER_DIGITS = string.ascii_uppercase + "234567"


@dataclass(frozen=True, slots=True)
class Identity:
    account_id: str
    default_role_arn: str


def _random(prefix: str, n: int) -> str:
    return prefix + "".join(secrets.choice(_UPPER_DIGITS) for _ in range(n))


def new_access_key() -> tuple[str, str]:
    return _random("AKIA", 16), secrets.token_urlsafe(30)[:40]


def role_arn(account_id: str, name: str, path: str = "/") -> str:
    return f"arn:aws:iam::{account_id}:role{path}{name}"


def role_description(
    account_id: str,
    name: str,
    trust_policy: dict | str,
    *,
    path: str = "/",
    description: str = "",
    max_session: int = 3600,
    tags: list | None = None,
    now: dt.datetime,
) -> dict:
    """GetRole's ``Role`` structure; the trust policy is URL-encoded JSON, as IAM returns it."""
    document = trust_policy if isinstance(trust_policy, str) else json.dumps(trust_policy)
    role = {
        "Path": path,
        "RoleName": name,
        "RoleId": _random("AROA", 17),
        "Arn": role_arn(account_id, name, path),
        "CreateDate": now.timestamp(),
        "AssumeRolePolicyDocument": quote(document, safe=""),
        "MaxSessionDuration": max_session,
        "Tags": tags or [],
    }
    if description:
        role["Description"] = description
    return role


def create_role(store: SqlStore, role: dict, now: dt.datetime) -> Resource:
    return store.create_resource(Resource(ROLE_KIND, role["RoleName"], role["Arn"], "", now, now, role))


def bootstrap(store: SqlStore, now: dt.datetime | None = None) -> Identity:
    """Create, once, the account id and the default SageMaker execution role."""
    now = now or dt.datetime.now(dt.UTC)
    account_id = store.set_meta_default("account_id", "".join(secrets.choice(string.digits) for _ in range(12)))
    if store.get_resource(ROLE_KIND, DEFAULT_ROLE) is None:
        role = role_description(
            account_id,
            DEFAULT_ROLE,
            SAGEMAKER_TRUST_POLICY,
            now=now,
            description="Default execution role for SageMaker jobs, models and endpoints.",
        )
        with contextlib.suppress(AlreadyExists):  # another process created it first
            create_role(store, role, now)
    return Identity(account_id, role_arn(account_id, DEFAULT_ROLE))


def create_access_key(
    store: SqlStore, account_id: str, description: str = "", access_key_id: str | None = None, secret: str | None = None
) -> AccessKey:
    """A key that acts as a session of the default execution role (what ``get_execution_role`` expects)."""
    generated = new_access_key()
    key = AccessKey(
        access_key_id=access_key_id or generated[0],
        secret_access_key=secret or generated[1],
        principal_arn=f"arn:aws:sts::{account_id}:assumed-role/{DEFAULT_ROLE}/{DEFAULT_SESSION}",
        user_id=f"{_random('AROA', 17)}:{DEFAULT_SESSION}",
        status="Active",
        created_at=dt.datetime.now(dt.UTC),
        description=description,
    )
    store.add_access_key(key)
    return key


def platform_key(store: SqlStore, account_id: str, imported: tuple[str, str] | None = None) -> AccessKey:
    """The oldest active key (the profile's, and the platform's own for S3); created on a new platform.

    ``imported`` (an external S3 store's key pair) becomes the first key, so one profile works for both.
    """
    keys = [k for k in store.list_access_keys() if k.status == "Active"]
    if keys:
        return keys[0]
    try:
        return create_access_key(
            store,
            account_id,
            "created by opensage up",
            imported[0] if imported else None,
            imported[1] if imported else None,
        )
    except AlreadyExists:
        return store.list_access_keys()[0]
