"""SageMaker ML lineage tracking: artifacts, contexts, actions, associations and QueryLineage.

What the SDK's ``sagemaker.lineage`` package and ``Run.log_*`` graph artifacts call, over the graph
:mod:`opensage.experiments.lineage` keeps, including the entities the platform records for jobs and
endpoints by itself.

LIMITATIONS: ``LineageGroupArn`` is never set (no lineage groups); QueryLineage answers every vertex in
one page; ``CreatedBy``/``LastModifiedBy`` are not recorded.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from opensage.aws.context import RequestContext
from opensage.errors import resource_not_found, validation_error
from opensage.experiments import lineage as lin
from opensage.providers.sagemaker.experiments import _listed
from opensage.store.entities import Resource
from opensage.store.sql import SqlStore

_SUMMARY = {
    lin.ARTIFACT: ("ArtifactArn", "ArtifactName", "Source", "ArtifactType", "CreationTime", "LastModifiedTime"),
    lin.CONTEXT: ("ContextArn", "ContextName", "Source", "ContextType", "CreationTime", "LastModifiedTime"),
    lin.ACTION: ("ActionArn", "ActionName", "Source", "ActionType", "Status", "CreationTime", "LastModifiedTime"),
}
_TYPE = {lin.ARTIFACT: "ArtifactType", lin.CONTEXT: "ContextType", lin.ACTION: "ActionType"}
_NOUN = {lin.ARTIFACT: "Artifact", lin.CONTEXT: "Context", lin.ACTION: "Action"}


def _public(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if not k.startswith("_") and k != "Tags"}


class LineageOperations:
    store: SqlStore
    clock: Callable[[], dt.datetime]

    def _entity(self, kind: str, name_or_arn: str) -> Resource:
        row = self.store.get_resource(kind, name_or_arn.rsplit("/", 1)[-1].lower())
        if row is None:
            raise resource_not_found(f"{_NOUN[kind]} {name_or_arn} does not exist.")
        return row

    def _list(self, kind: str, request: dict[str, Any]) -> list[dict[str, Any]]:
        rows = self.store.list_resources(kind)
        uri, of_type = request.get("SourceUri"), request.get(_TYPE[kind])
        rows = [
            r
            for r in rows
            if (uri is None or (r.data.get("Source") or {}).get("SourceUri") == uri)
            and (of_type is None or r.data.get(_TYPE[kind]) == of_type)
        ]
        return [{k: r.data[k] for k in _SUMMARY[kind] if k in r.data} for r in _listed(rows, request)]

    # --- artifacts ------------------------------------------------------------------------------

    def create_artifact(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        if not request["Source"].get("SourceUri"):
            raise validation_error("Source.SourceUri is required: the URI of what the artifact stands for.")
        row = lin.create_artifact(self.store, lambda r: ctx.arn("sagemaker", r), request, self.clock())
        return {"ArtifactArn": row.arn}

    def describe_artifact(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        return _public(self._entity(lin.ARTIFACT, request["ArtifactArn"]).data)

    def update_artifact(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        row = self._entity(lin.ARTIFACT, request["ArtifactArn"])
        return {"ArtifactArn": lin.update_entity(self.store, row, request, self.clock()).arn}

    def delete_artifact(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        if request.get("ArtifactArn"):
            row = self._entity(lin.ARTIFACT, request["ArtifactArn"])
        elif (request.get("Source") or {}).get("SourceUri"):
            uri = request["Source"]["SourceUri"]
            found = [
                r
                for r in self.store.list_resources(lin.ARTIFACT)
                if (r.data.get("Source") or {}).get("SourceUri") == uri
            ]
            if not found:
                raise resource_not_found(f"No artifact has the source URI {uri}.")
            row = found[0]
        else:
            raise validation_error("Give the ArtifactArn or the Source of the artifact to delete.")
        lin.delete_entity(self.store, row)
        return {"ArtifactArn": row.arn}

    def list_artifacts(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        return {"ArtifactSummaries": self._list(lin.ARTIFACT, request)}

    # --- contexts and actions -------------------------------------------------------------------

    def create_context(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        arn = ctx.arn("sagemaker", f"context/{request['ContextName'].lower()}")
        return {"ContextArn": lin.create_named(self.store, lin.CONTEXT, arn, request, self.clock()).arn}

    def describe_context(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        return _public(self._entity(lin.CONTEXT, request["ContextName"]).data)

    def update_context(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        row = self._entity(lin.CONTEXT, request["ContextName"])
        return {"ContextArn": lin.update_entity(self.store, row, request, self.clock()).arn}

    def delete_context(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        row = self._entity(lin.CONTEXT, request["ContextName"])
        lin.delete_entity(self.store, row)
        return {"ContextArn": row.arn}

    def list_contexts(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        return {"ContextSummaries": self._list(lin.CONTEXT, request)}

    def create_action(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        arn = ctx.arn("sagemaker", f"action/{request['ActionName'].lower()}")
        return {"ActionArn": lin.create_named(self.store, lin.ACTION, arn, request, self.clock()).arn}

    def describe_action(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        return _public(self._entity(lin.ACTION, request["ActionName"]).data)

    def update_action(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        row = self._entity(lin.ACTION, request["ActionName"])
        return {"ActionArn": lin.update_entity(self.store, row, request, self.clock()).arn}

    def delete_action(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        row = self._entity(lin.ACTION, request["ActionName"])
        lin.delete_entity(self.store, row)
        return {"ActionArn": row.arn}

    def list_actions(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        return {"ActionSummaries": self._list(lin.ACTION, request)}

    # --- associations and queries ---------------------------------------------------------------

    def add_association(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        source, dest = request["SourceArn"], request["DestinationArn"]
        if source == dest:
            raise validation_error("An association needs two different entities: SourceArn equals DestinationArn.")
        lin.add_association(self.store, source, dest, request.get("AssociationType"), self.clock())
        return {"SourceArn": source, "DestinationArn": dest}

    def delete_association(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        lin.delete_association(self.store, request["SourceArn"], request["DestinationArn"])
        return {"SourceArn": request["SourceArn"], "DestinationArn": request["DestinationArn"]}

    def list_associations(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        if request.get("SourceArn"):
            rows = lin.edges_from(self.store, request["SourceArn"])
        else:
            rows = self.store.list_resources(lin.ASSOCIATION)
        for member in ("DestinationArn", "SourceType", "DestinationType", "AssociationType"):
            if request.get(member):
                rows = [r for r in rows if r.data.get(member) == request[member]]
        by = request.get("SortBy") or "CreationTime"
        descending = (request.get("SortOrder") or "Descending") == "Descending"
        rows = _listed(rows, {**request, "SortBy": "CreationTime"})  # the time filters, newest first
        if by != "CreationTime":
            rows.sort(key=lambda r: str(r.data.get(by, "")), reverse=descending)
        return {"AssociationSummaries": [dict(r.data) for r in rows]}

    def query_lineage(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        if not request.get("StartArns"):
            raise validation_error("StartArns needs at least one ARN to start the query from.")
        for arn in request["StartArns"]:
            if lin.vertex(self.store, arn) is None:
                raise resource_not_found(f"{arn} is not a lineage entity of this account.")
        return lin.query(self.store, request)
