"""SageMaker Ground Truth workforces and private work teams.

A private workforce (one per account and region, as on AWS) is either Amazon Cognito's (a user pool
and app client of this platform's ``cognito-idp``) or an OIDC identity provider's; creating a work
team of Cognito user groups with no workforce yet makes the ``default`` one from their pool. The
members of a team are the users of its groups (:mod:`opensage.labeling.workers`); they sign in at
the worker portal, the team's ``SubDomain``.

LIMITATIONS: sign-in through an OIDC workforce's identity provider is not offered (its teams are
recorded, their members cannot sign in here); ``SourceIpConfig``, ``WorkforceVpcConfig``,
``NotificationConfiguration`` and ``WorkerAccessConfiguration`` are recorded only.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from opensage.aws.context import RequestContext
from opensage.errors import AlreadyExists, ServiceError, limit_exceeded, resource_not_found, validation_error
from opensage.labeling import PORTAL_PREFIX
from opensage.labeling import jobs as lj
from opensage.labeling import workers as w
from opensage.store import tags
from opensage.store.entities import Resource
from opensage.store.sql import SqlStore

WORKFORCE_KIND = "workforce"
WORKTEAM_KIND = lj.WORKTEAM_KIND
DEFAULT_WORKFORCE = "default"
_SORT = {"Name": "name", "CreateDate": "created_at"}


class WorkteamOperations:
    store: SqlStore
    clock: Callable[[], dt.datetime]
    labeling_url: str  # the platform's API URL; the portal is under PORTAL_PREFIX

    def _subdomain(self) -> str:
        return (self.labeling_url + PORTAL_PREFIX).split("://", 1)[-1]

    # workforces
    def _workforce(self, name: str) -> Resource:
        row = self.store.get_resource(WORKFORCE_KIND, name)
        if row is None:
            raise resource_not_found(f"Workforce {name} does not exist (see ListWorkforces).")
        return row

    def _workforce_out(self, row: Resource) -> dict[str, Any]:
        out = {**row.data, "WorkforceName": row.name, "WorkforceArn": row.arn, "CreateDate": row.created_at,
               "LastUpdatedDate": row.updated_at, "Status": "Active", "SubDomain": self._subdomain()}  # fmt: skip
        if out.get("OidcConfig"):
            out["OidcConfig"] = {k: v for k, v in out["OidcConfig"].items() if k != "ClientSecret"}
        return out

    def _check_cognito(self, pool: str, client: str | None) -> None:
        if self.store.get_resource(w.POOL_KIND, pool) is None:
            raise validation_error(
                f"User pool {pool} does not exist: create it with cognito-idp CreateUserPool on this platform."
            )
        if client is not None:
            row = self.store.get_resource(w.CLIENT_KIND, client)
            if row is None or row.data["UserPoolId"] != pool:
                raise validation_error(
                    f"App client {client} is not a client of user pool {pool} (CreateUserPoolClient)."
                )

    def create_workforce(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        cognito, oidc = request.get("CognitoConfig"), request.get("OidcConfig")
        if bool(cognito) == bool(oidc):
            raise validation_error("Give either CognitoConfig or OidcConfig for a private workforce.")
        if cognito:
            self._check_cognito(cognito["UserPool"], cognito["ClientId"])
        return {"WorkforceArn": self._make_workforce(ctx, request["WorkforceName"], request).arn}

    def _make_workforce(self, ctx: RequestContext, name: str, request: dict[str, Any]) -> Resource:
        if self.store.list_resources(WORKFORCE_KIND, limit=1):
            raise limit_exceeded(
                "An account has one private workforce per region, and this one has it: see ListWorkforces "
                "(delete it first to make another)."
            )
        now = self.clock()
        keys = ("CognitoConfig", "OidcConfig", "SourceIpConfig", "WorkforceVpcConfig", "IpAddressType")
        data = {k: request[k] for k in keys if request.get(k)}
        data.setdefault("SourceIpConfig", {"Cidrs": []})
        arn = ctx.arn("sagemaker", f"workforce/{name}")
        try:
            row = self.store.create_resource(Resource(WORKFORCE_KIND, name, arn, "Active", now, now, data))
        except AlreadyExists:
            raise ServiceError("ResourceInUse", f"Workforce {name} exists already.") from None
        if request.get("Tags"):
            tags.put_tags(self.store, arn, request["Tags"], now)
        return row

    def describe_workforce(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        return {"Workforce": self._workforce_out(self._workforce(request["WorkforceName"]))}

    def list_workforces(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        rows = self.store.list_resources(
            WORKFORCE_KIND,
            name_contains=request.get("NameContains"),
            sort_by=_SORT[request.get("SortBy") or "CreateDate"],
            descending=(request.get("SortOrder") or "Ascending") == "Descending",
        )
        return {"Workforces": [self._workforce_out(r) for r in rows]}

    def update_workforce(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        row = self._workforce(request["WorkforceName"])
        keys = ("SourceIpConfig", "OidcConfig", "WorkforceVpcConfig", "IpAddressType")
        changes: dict[str, Any] = {k: request[k] for k in keys if k in request}
        if changes.get("OidcConfig") and row.data.get("CognitoConfig"):
            raise validation_error("A Cognito workforce cannot take an OidcConfig.")
        updated = self.store.modify_resource(WORKFORCE_KIND, row.name, lambda r: ({**r.data, **changes}, None),
                                             now=self.clock())  # fmt: skip
        return {"Workforce": self._workforce_out(updated)}

    def delete_workforce(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        row = self._workforce(request["WorkforceName"])
        teams = [t.name for t in self.store.list_resources(WORKTEAM_KIND) if t.data.get("WorkforceArn") == row.arn]
        if teams:
            raise validation_error(
                f"Workforce {row.name} still has work teams ({', '.join(teams)}): delete them first."
            )
        self.store.delete_resource(WORKFORCE_KIND, row.name)
        return {}

    # work teams
    def _workteam(self, name: str) -> Resource:
        row = self.store.get_resource(WORKTEAM_KIND, name)
        if row is None:
            raise resource_not_found(f"Workteam {name} does not exist (see ListWorkteams).")
        return row

    def _workteam_out(self, row: Resource) -> dict[str, Any]:
        return {**row.data, "WorkteamName": row.name, "WorkteamArn": row.arn, "CreateDate": row.created_at,
                "LastUpdatedDate": row.updated_at, "SubDomain": self._subdomain(), "ProductListingIds": []}  # fmt: skip

    def _check_members(self, definitions: list[dict[str, Any]], workforce: Resource | None) -> None:
        cognito = [d["CognitoMemberDefinition"] for d in definitions if d.get("CognitoMemberDefinition")]
        oidc = [d["OidcMemberDefinition"] for d in definitions if d.get("OidcMemberDefinition")]
        if cognito and oidc:
            raise validation_error("A work team's members are all Cognito user groups or all OIDC groups, not both.")
        if not cognito and not oidc:
            raise validation_error("MemberDefinitions needs CognitoMemberDefinition or OidcMemberDefinition entries.")
        pools = {c["UserPool"] for c in cognito}
        if len(pools) > 1:
            raise validation_error("A work team's Cognito user groups must all be of one user pool.")
        for c in cognito:
            self._check_cognito(c["UserPool"], c.get("ClientId"))
            if self.store.get_resource(w.GROUP_KIND, w.group_key(c["UserPool"], c["UserGroup"])) is None:
                raise validation_error(
                    f"User group {c['UserGroup']} does not exist in user pool {c['UserPool']} "
                    "(create it with cognito-idp CreateGroup)."
                )
        if workforce is not None:
            own = (workforce.data.get("CognitoConfig") or {}).get("UserPool")
            if cognito and own != next(iter(pools)):
                raise validation_error(
                    f"The user pool of the member definitions is not the workforce's ({own or 'an OIDC workforce'})."
                )
            if oidc and not workforce.data.get("OidcConfig"):
                raise validation_error("OidcMemberDefinition needs a workforce made with OidcConfig.")

    def create_workteam(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        name = request["WorkteamName"]
        forces = self.store.list_resources(WORKFORCE_KIND)
        wanted = request.get("WorkforceName")
        workforce = next((f for f in forces if f.name == wanted), None) if wanted else (forces[0] if forces else None)
        if wanted and workforce is None:
            raise resource_not_found(f"Workforce {wanted} does not exist (see ListWorkforces).")
        definitions = request["MemberDefinitions"]
        self._check_members(definitions, workforce)
        if workforce is None:  # AWS makes the private workforce with the first Cognito team
            c = definitions[0].get("CognitoMemberDefinition")
            if c is None:
                raise validation_error(
                    "An OIDC work team needs a workforce: create it with CreateWorkforce (OidcConfig)."
                )
            config = {"CognitoConfig": {"UserPool": c["UserPool"], "ClientId": c["ClientId"]}}
            workforce = self._make_workforce(ctx, DEFAULT_WORKFORCE, config)
        now = self.clock()
        data = {"MemberDefinitions": definitions, "WorkforceArn": workforce.arn,
                "Description": request.get("Description") or ""}  # fmt: skip
        for key in ("NotificationConfiguration", "WorkerAccessConfiguration"):
            if request.get(key):
                data[key] = request[key]
        arn = ctx.arn("sagemaker", f"workteam/private-crowd/{name}")
        try:
            self.store.create_resource(Resource(WORKTEAM_KIND, name, arn, "", now, now, data))
        except AlreadyExists:
            raise ServiceError("ResourceInUse", f"Workteam {name} exists already.") from None
        if request.get("Tags"):
            tags.put_tags(self.store, arn, request["Tags"], now)
        return {"WorkteamArn": arn}

    def describe_workteam(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        return {"Workteam": self._workteam_out(self._workteam(request["WorkteamName"]))}

    def list_workteams(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        rows = self.store.list_resources(
            WORKTEAM_KIND,
            name_contains=request.get("NameContains"),
            sort_by=_SORT[request.get("SortBy") or "CreateDate"],
            descending=(request.get("SortOrder") or "Ascending") == "Descending",
        )
        return {"Workteams": [self._workteam_out(r) for r in rows]}

    def update_workteam(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        row = self._workteam(request["WorkteamName"])
        keys = ("MemberDefinitions", "Description", "NotificationConfiguration", "WorkerAccessConfiguration")
        changes: dict[str, Any] = {k: request[k] for k in keys if k in request}
        if "MemberDefinitions" in changes:
            forces = [f for f in self.store.list_resources(WORKFORCE_KIND) if f.arn == row.data.get("WorkforceArn")]
            self._check_members(changes["MemberDefinitions"], forces[0] if forces else None)
        updated = self.store.modify_resource(WORKTEAM_KIND, row.name, lambda r: ({**r.data, **changes}, None),
                                             now=self.clock())  # fmt: skip
        return {"Workteam": self._workteam_out(updated)}

    def delete_workteam(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        row = self._workteam(request["WorkteamName"])
        busy = [j.name for j in self.store.list_resources(lj.KIND) if j.status in lj.ACTIVE
                and j.data["HumanTaskConfig"]["WorkteamArn"] == row.arn]  # fmt: skip
        if busy:
            raise validation_error(
                f"Workteam {row.name} has labeling jobs in progress ({', '.join(busy)}): stop them first."
            )
        self.store.delete_resource(WORKTEAM_KIND, row.name)
        return {"Success": True}
