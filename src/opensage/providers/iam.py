"""AWS IAM, the part SageMaker needs: execution roles.

LIMITATIONS: roles only (CreateRole, GetRole, ListRoles, DeleteRole, SimulatePrincipalPolicy).
OpenSage does not evaluate policies: every access key may call every action, which is what
SimulatePrincipalPolicy reports.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

from opensage.aws.context import RequestContext
from opensage.errors import AlreadyExists, NotFound, ServiceError
from opensage.identity import ROLE_KIND, create_role, role_description
from opensage.store.sql import SqlStore


def _no_such_role(name: str) -> ServiceError:
    return ServiceError("NoSuchEntity", f"The role with name {name} cannot be found.", 404)


class IamProvider:
    def __init__(self, store: SqlStore, clock: Callable[[], dt.datetime]) -> None:
        self.store = store
        self.clock = clock

    def create_role(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        document = request["AssumeRolePolicyDocument"]
        try:
            json.loads(document)
        except ValueError as exc:
            raise ServiceError("MalformedPolicyDocument", f"AssumeRolePolicyDocument is not valid JSON: {exc}") from exc
        now = self.clock()
        role = role_description(
            ctx.account_id,
            request["RoleName"],
            document,
            path=request.get("Path", "/"),
            description=request.get("Description", ""),
            max_session=request.get("MaxSessionDuration", 3600),
            tags=request.get("Tags"),
            now=now,
        )
        try:
            create_role(self.store, role, now)
        except AlreadyExists as exc:
            raise ServiceError(
                "EntityAlreadyExists", f"Role with name {request['RoleName']} already exists.", 409
            ) from exc
        return {"Role": role}

    def get_role(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        row = self.store.get_resource(ROLE_KIND, request["RoleName"])
        if row is None:
            raise _no_such_role(request["RoleName"])
        return {"Role": row.data}

    def list_roles(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        prefix = request.get("PathPrefix", "/")
        rows = self.store.list_resources(ROLE_KIND, sort_by="name", descending=False)
        return {"Roles": [r.data for r in rows if r.data.get("Path", "/").startswith(prefix)]}

    def delete_role(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        try:
            self.store.delete_resource(ROLE_KIND, request["RoleName"])
        except NotFound as exc:
            raise _no_such_role(request["RoleName"]) from exc
        return {}

    def simulate_principal_policy(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        resources = request.get("ResourceArns") or ["*"]
        results = [
            {
                "EvalActionName": action,
                "EvalResourceName": resource,
                "EvalDecision": "allowed",
                "MatchedStatements": [],
                "MissingContextValues": [],
            }
            for action in request["ActionNames"]
            for resource in resources
        ]
        return {"EvaluationResults": results, "IsTruncated": False}
