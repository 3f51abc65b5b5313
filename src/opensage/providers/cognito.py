"""Amazon Cognito user pools (``cognito-idp``), as far as a private labeling workforce needs them.

User pools and their app clients, groups, and users created by an administrator (``AdminCreateUser``
with a temporary password, ``AdminSetUserPassword``, groups). The users are the workers of the
private work teams whose ``CognitoMemberDefinition`` names their pool and group
(:mod:`opensage.labeling.workers`); they sign in to the worker portal, not through Cognito's own
authentication flows.

LIMITATIONS: no self sign-up, hosted UI, tokens (InitiateAuth...), MFA, email or SMS (a user
created without ``TemporaryPassword`` gets one that only AdminSetUserPassword can replace, since
no message is sent); lists are not paged.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import secrets
import string
import uuid
from collections.abc import Callable
from typing import Any

from opensage.aws.context import RequestContext
from opensage.errors import AlreadyExists, NotFound, ServiceError
from opensage.labeling import workers as w
from opensage.store.entities import Resource
from opensage.store.sql import SqlStore

_ID_CHARS = string.ascii_letters + string.digits


def _error(code: str, message: str) -> ServiceError:
    return ServiceError(code, message, 400)


class CognitoProvider:
    def __init__(self, store: SqlStore, clock: Callable[[], dt.datetime]) -> None:
        self.store = store
        self.clock = clock

    # user pools and clients
    def _pool(self, pool_id: str) -> Resource:
        row = self.store.get_resource(w.POOL_KIND, pool_id)
        if row is None:
            raise _error("ResourceNotFoundException", f"User pool {pool_id} does not exist.")
        return row

    def _pool_out(self, row: Resource) -> dict[str, Any]:
        return {**row.data, "Id": row.name, "Arn": row.arn, "CreationDate": row.created_at,
                "LastModifiedDate": row.updated_at, "Status": "Enabled"}  # fmt: skip

    def create_user_pool(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        pool_id = f"{ctx.region}_{''.join(secrets.choice(_ID_CHARS) for _ in range(9))}"
        now = self.clock()
        data = {"Name": request["PoolName"], "EstimatedNumberOfUsers": 0}
        arn = ctx.arn("cognito-idp", f"userpool/{pool_id}")
        row = self.store.create_resource(Resource(w.POOL_KIND, pool_id, arn, "Enabled", now, now, data))
        return {"UserPool": self._pool_out(row)}

    def describe_user_pool(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        return {"UserPool": self._pool_out(self._pool(request["UserPoolId"]))}

    def list_user_pools(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        rows = self.store.list_resources(w.POOL_KIND, sort_by="created_at", descending=False)
        pools = [{"Id": r.name, "Name": r.data["Name"], "CreationDate": r.created_at,
                  "LastModifiedDate": r.updated_at, "Status": "Enabled"} for r in rows]  # fmt: skip
        return {"UserPools": pools[: request.get("MaxResults") or 60]}

    def delete_user_pool(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        pool = self._pool(request["UserPoolId"]).name
        for kind in (w.USER_KIND, w.GROUP_KIND):
            for row in self.store.list_resources(kind, name_contains=f"{pool}/"):
                self.store.delete_resource(kind, row.name)
        for row in self.store.list_resources(w.CLIENT_KIND):
            if row.data["UserPoolId"] == pool:
                self.store.delete_resource(w.CLIENT_KIND, row.name)
        self.store.delete_resource(w.POOL_KIND, pool)
        return {}

    def create_user_pool_client(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        pool = self._pool(request["UserPoolId"]).name
        client_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(26))
        now = self.clock()
        data = {"UserPoolId": pool, "ClientName": request["ClientName"], "ClientId": client_id}
        if request.get("GenerateSecret"):
            data["ClientSecret"] = secrets.token_urlsafe(38)
        self.store.create_resource(
            Resource(w.CLIENT_KIND, client_id, f"{w.CLIENT_KIND}:{client_id}", "Enabled", now, now, data)
        )
        return {"UserPoolClient": {**data, "CreationDate": now, "LastModifiedDate": now}}

    def describe_user_pool_client(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        row = self.store.get_resource(w.CLIENT_KIND, request["ClientId"])
        if row is None or row.data["UserPoolId"] != request["UserPoolId"]:
            raise _error("ResourceNotFoundException", f"User pool client {request['ClientId']} does not exist.")
        return {"UserPoolClient": {**row.data, "CreationDate": row.created_at, "LastModifiedDate": row.updated_at}}

    # groups
    def _group_out(self, row: Resource) -> dict[str, Any]:
        return {**row.data, "CreationDate": row.created_at, "LastModifiedDate": row.updated_at}

    def _group(self, pool: str, group: str) -> Resource:
        row = self.store.get_resource(w.GROUP_KIND, w.group_key(pool, group))
        if row is None:
            raise _error("ResourceNotFoundException", f"Group {group} not found in user pool {pool}.")
        return row

    def create_group(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        pool = self._pool(request["UserPoolId"]).name
        name = request["GroupName"]
        now = self.clock()
        data = {"GroupName": name, "UserPoolId": pool, "Description": request.get("Description")}
        data = {k: v for k, v in data.items() if v is not None}
        try:
            row = self.store.create_resource(
                Resource(w.GROUP_KIND, w.group_key(pool, name), f"{w.GROUP_KIND}:{pool}/{name}", "", now, now, data)
            )
        except AlreadyExists:
            raise _error("GroupExistsException", f"A group named {name} already exists in user pool {pool}.") from None
        return {"Group": self._group_out(row)}

    def get_group(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        return {"Group": self._group_out(self._group(request["UserPoolId"], request["GroupName"]))}

    def list_groups(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        pool = self._pool(request["UserPoolId"]).name
        rows = self.store.list_resources(w.GROUP_KIND, name_contains=f"{pool}/", sort_by="name", descending=False)
        return {"Groups": [self._group_out(r) for r in rows]}

    def delete_group(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        pool, group = request["UserPoolId"], request["GroupName"]
        self._group(pool, group)
        for user in w.members(self.store, pool, group):
            self._set_groups(user, [g for g in w.groups_of(user) if g != group])
        self.store.delete_resource(w.GROUP_KIND, w.group_key(pool, group))
        return {}

    # users
    def _user(self, pool: str, username: str) -> Resource:
        self._pool(pool)
        row = w.get_user(self.store, pool, username)
        if row is None:
            raise _error("UserNotFoundException", f"User {username} does not exist in user pool {pool}.")
        return row

    @staticmethod
    def _user_out(row: Resource) -> dict[str, Any]:
        return {
            "Username": row.data["Username"],
            "Attributes": w.attributes(row),
            "UserCreateDate": row.created_at,
            "UserLastModifiedDate": row.updated_at,
            "Enabled": row.data.get("Enabled", True),
            "UserStatus": row.status,
        }

    def admin_create_user(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        pool = self._pool(request["UserPoolId"]).name
        username = request["Username"]
        temporary = request.get("TemporaryPassword") or secrets.token_urlsafe(12)
        problem = w.password_problem(temporary)
        if problem:
            raise _error("InvalidPasswordException", problem)
        attrs = {a["Name"]: a.get("Value", "") for a in request.get("UserAttributes") or []}
        attrs.setdefault("sub", str(uuid.uuid4()))
        now = self.clock()
        if request.get("MessageAction") == "RESEND":
            return {"User": self._user_out(self._user(pool, username))}
        data = {"Username": username, "Attributes": attrs, "Password": w.hash_password(temporary), "Groups": []}
        key = w.user_key(pool, username)
        try:
            row = self.store.create_resource(
                Resource(w.USER_KIND, key, f"{w.USER_KIND}:{key}", w.FORCE_CHANGE, now, now, data)
            )
        except AlreadyExists:
            raise _error("UsernameExistsException", "User account already exists.") from None
        return {"User": self._user_out(row)}

    def admin_get_user(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        row = self._user(request["UserPoolId"], request["Username"])
        out = self._user_out(row)
        out["UserAttributes"] = out.pop("Attributes")
        return out

    def admin_set_user_password(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        row = self._user(request["UserPoolId"], request["Username"])
        problem = w.password_problem(request["Password"])
        if problem:
            raise _error("InvalidPasswordException", problem)
        status = w.CONFIRMED if request.get("Permanent") else w.FORCE_CHANGE
        hashed = w.hash_password(request["Password"])
        self.store.modify_resource(w.USER_KIND, row.name, lambda r: ({**r.data, "Password": hashed}, status),
                                   now=self.clock())  # fmt: skip
        return {}

    def admin_delete_user(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        row = self._user(request["UserPoolId"], request["Username"])
        self.store.delete_resource(w.USER_KIND, row.name)
        return {}

    def _set_groups(self, user: Resource, groups: list[str]) -> None:
        with contextlib.suppress(NotFound):
            self.store.modify_resource(w.USER_KIND, user.name, lambda r: ({**r.data, "Groups": groups}, None),
                                       now=self.clock())  # fmt: skip

    def admin_add_user_to_group(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        pool, group = request["UserPoolId"], request["GroupName"]
        user = self._user(pool, request["Username"])
        self._group(pool, group)
        if group not in w.groups_of(user):
            self._set_groups(user, [*w.groups_of(user), group])
        return {}

    def admin_remove_user_from_group(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        pool, group = request["UserPoolId"], request["GroupName"]
        user = self._user(pool, request["Username"])
        self._group(pool, group)
        self._set_groups(user, [g for g in w.groups_of(user) if g != group])
        return {}

    def admin_list_groups_for_user(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        pool = request["UserPoolId"]
        user = self._user(pool, request["Username"])
        rows = [self.store.get_resource(w.GROUP_KIND, w.group_key(pool, g)) for g in w.groups_of(user)]
        return {"Groups": [self._group_out(r) for r in rows if r is not None]}

    def list_users(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        pool = self._pool(request["UserPoolId"]).name
        rows = self.store.list_resources(w.USER_KIND, name_contains=f"{pool}/", sort_by="name", descending=False)
        return {"Users": [self._user_out(r) for r in rows if r.name.startswith(f"{pool}/")]}

    def list_users_in_group(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        pool, group = request["UserPoolId"], request["GroupName"]
        self._group(pool, group)
        return {"Users": [self._user_out(r) for r in w.members(self.store, pool, group)]}
