"""The workers of a private workforce: Amazon Cognito user pools, their groups and users, in the store.

A private work team names its members as Cognito user groups (``CognitoMemberDefinition``); the
workers are the users of those groups, who sign in to the worker portal with their user name and
password. A user created with a temporary password (``AdminCreateUser``) sets a password of their own
at the first sign-in (status ``FORCE_CHANGE_PASSWORD``, then ``CONFIRMED``), as with Cognito.
Passwords are kept as scrypt hashes.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from typing import Any

from opensage.store.entities import Resource
from opensage.store.sql import SqlStore

POOL_KIND = "cognito-user-pool"
CLIENT_KIND = "cognito-user-pool-client"
GROUP_KIND = "cognito-group"
USER_KIND = "cognito-user"
FORCE_CHANGE, CONFIRMED = "FORCE_CHANGE_PASSWORD", "CONFIRMED"
MIN_PASSWORD = 8  # Cognito's default password policy: at least 8 characters


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1)
    return f"scrypt${salt.hex()}${digest.hex()}"


def password_matches(stored: str, password: str) -> bool:
    try:
        _, salt, digest = stored.split("$")
        again = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=2**14, r=8, p=1)
    except ValueError:
        return False
    return hmac.compare_digest(again.hex(), digest)


def password_problem(password: str) -> str | None:
    """Why ``password`` does not meet the policy (Cognito's default, less the character classes), or None."""
    if len(password) < MIN_PASSWORD:
        return f"Password did not conform with policy: Password not long enough (at least {MIN_PASSWORD} characters)."
    return None


def user_key(pool: str, username: str) -> str:
    return f"{pool}/{username}"


def group_key(pool: str, group: str) -> str:
    return f"{pool}/{group}"


def get_user(store: SqlStore, pool: str, username: str) -> Resource | None:
    return store.get_resource(USER_KIND, user_key(pool, username))


def groups_of(user: Resource) -> list[str]:
    return list(user.data.get("Groups") or [])


def members(store: SqlStore, pool: str, group: str) -> list[Resource]:
    return [u for u in store.list_resources(USER_KIND, name_contains=f"{pool}/") if group in groups_of(u)]


def team_member(team: dict[str, Any], pool: str, groups: Iterable[str]) -> bool:
    """Whether a user of ``pool`` in ``groups`` is a member of the work team described by ``team``."""
    wanted = set(groups)
    for d in team.get("MemberDefinitions") or []:
        cognito = d.get("CognitoMemberDefinition")
        if cognito and cognito.get("UserPool") == pool and cognito.get("UserGroup") in wanted:
            return True
    return False


def attributes(user: Resource) -> list[dict[str, str]]:
    return [{"Name": k, "Value": v} for k, v in (user.data.get("Attributes") or {}).items()]
