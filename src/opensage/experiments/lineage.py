"""Lineage: artifacts, contexts, actions, the associations between them and trial components, and queries.

Entities are rows of their own kind: an artifact is named by the id in its ARN (``artifact/<32 hex>``),
a context or an action by its lower-cased name. An association is a row named by a digest of its two
ARNs, with the source as ``parent_arn`` (so the edges leaving a vertex are read by index).

:class:`LineageRecorder` (a store watcher) records what SageMaker records for a user without being
asked: a job's inputs and image as ``DataSet``/``Image`` artifacts that ``ContributedTo`` the job's
trial component, what the job made (a training job's ``Model`` artifact, a processing job's outputs,
a transform's output) as artifacts it ``Produced``, and for an endpoint a context of type
``Endpoint`` that the model artifacts of its variants ``ContributedTo``. Artifacts recorded this way
are shared by source URI: the model a job produced is the one an endpoint serves, so a query from
the endpoint reaches the job and its data.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from opensage.errors import AlreadyExists, Conflict, NotFound, ServiceError, resource_not_found, validation_error
from opensage.experiments import records as rec
from opensage.experiments.jobs import JOB_KINDS, component_name
from opensage.store import tags
from opensage.store.entities import Resource
from opensage.store.sql import SqlStore
from opensage.timestamps import epoch, jsonable

log = logging.getLogger(__name__)
ARTIFACT, CONTEXT, ACTION, ASSOCIATION = "lineage-artifact", "lineage-context", "lineage-action", "lineage-association"
# ARN resource type -> (store kind, lineage type, the member holding the entity's own type)
_BY_ARN = {
    "artifact": (ARTIFACT, "Artifact", "ArtifactType"),
    "context": (CONTEXT, "Context", "ContextType"),
    "action": (ACTION, "Action", "ActionType"),
    "experiment-trial-component": (rec.COMPONENT, "TrialComponent", None),
}
_JOB_TYPES = {
    "SageMakerTrainingJob": "TrainingJob",
    "SageMakerProcessingJob": "ProcessingJob",
    "SageMakerTransformJob": "TransformJob",
}
DEFAULT_DEPTH = 10


def _arn_parts(arn: str) -> tuple[str, str] | None:
    """(ARN resource type, row name) of a lineage vertex's ARN, None for any other ARN."""
    parts = arn.split(":", 5)
    if len(parts) != 6 or "/" not in parts[5]:
        return None
    kind, _, name = parts[5].partition("/")
    return (kind, name.lower()) if kind in _BY_ARN else None


def vertex(store: SqlStore, arn: str) -> tuple[Resource, str, str] | None:
    """(row, lineage type, type) of the entity ``arn`` names, None when there is none."""
    parts = _arn_parts(arn)
    if parts is None:
        return None
    kind, lineage_type, type_member = _BY_ARN[parts[0]]
    row = store.get_resource(kind, parts[1])
    if row is None:
        return None
    if type_member is None:
        source = (row.data.get("Source") or {}).get("SourceType", "")
        return row, lineage_type, _JOB_TYPES.get(source, source or "TrialComponent")
    return row, lineage_type, str(row.data.get(type_member, ""))


def _name_of(row: Resource) -> str | None:
    for member in ("ArtifactName", "ContextName", "ActionName", "TrialComponentName"):
        if row.data.get(member):
            return str(row.data[member])
    return None


# --- entities -------------------------------------------------------------------------------------


def create_artifact(
    store: SqlStore,
    arn_of: Callable[[str], str],
    request: Mapping[str, Any],
    now: dt.datetime,
    artifact_id: str | None = None,
) -> Resource:
    artifact_id = artifact_id or uuid.uuid4().hex
    arn = arn_of(f"artifact/{artifact_id}")
    data = jsonable({k: v for k, v in request.items() if k != "Tags"})
    data.update(ArtifactArn=arn, CreationTime=epoch(now), LastModifiedTime=epoch(now))
    row = store.create_resource(Resource(ARTIFACT, artifact_id, arn, "", now, now, data))
    if request.get("Tags"):
        tags.put_tags(store, arn, request["Tags"], now)
    return row


def create_named(store: SqlStore, kind: str, arn: str, request: Mapping[str, Any], now: dt.datetime) -> Resource:
    """A context or an action. Raises ``ServiceError`` (ValidationException) when the name is taken."""
    member = "ContextName" if kind == CONTEXT else "ActionName"
    data = jsonable({k: v for k, v in request.items() if k != "Tags"})
    data.update({f"{member[:-4]}Arn": arn, "CreationTime": epoch(now), "LastModifiedTime": epoch(now)})
    try:
        row = store.create_resource(
            Resource(kind, request[member].lower(), arn, data.get("Status", ""), now, now, data)
        )
    except AlreadyExists as exc:
        raise validation_error(f"{member[:-4]} {request[member]} already exists: {arn}") from exc
    if request.get("Tags"):
        tags.put_tags(store, arn, request["Tags"], now)
    return row


def update_entity(store: SqlStore, row: Resource, request: Mapping[str, Any], now: dt.datetime) -> Resource:
    """Set what an Update* request gives; Properties are merged, PropertiesToRemove removed."""

    def change(current: Resource) -> tuple[dict[str, Any], str | None]:
        data = dict(current.data)
        for member, value in request.items():
            if member not in ("Properties", "PropertiesToRemove") and not member.endswith(("Arn", "Name")):
                data[member] = jsonable(value)
        if request.get("ArtifactName"):
            data["ArtifactName"] = request["ArtifactName"]
        props = {**(data.get("Properties") or {}), **(request.get("Properties") or {})}
        for gone in request.get("PropertiesToRemove") or []:
            props.pop(gone, None)
        data["Properties"] = props
        data["LastModifiedTime"] = epoch(now)
        return data, data.get("Status") if row.kind == ACTION else None

    return store.modify_resource(row.kind, row.name, change, now=now)


def delete_entity(store: SqlStore, row: Resource) -> None:
    """Delete an entity with every association it is part of."""
    for edge in edges_from(store, row.arn) + edges_to(store, row.arn):
        store.delete_resource(ASSOCIATION, edge.name)
    store.delete_resource(row.kind, row.name)
    tags.drop_tags(store, row.arn)


# --- associations ---------------------------------------------------------------------------------


def _edge_name(source: str, destination: str) -> str:
    return hashlib.sha256(f"{source}|{destination}".encode()).hexdigest()[:40]


def add_association(store: SqlStore, source: str, destination: str, kind: str | None, now: dt.datetime) -> Resource:
    """Record an edge. Raises ``ServiceError``: ResourceNotFound for an ARN that names no lineage entity."""
    ends = []
    for arn in (source, destination):
        found = vertex(store, arn)
        if found is None:
            raise resource_not_found(
                f"{arn} is not a lineage entity of this account (an artifact, context, action or trial component)."
            )
        ends.append(found)
    (src, _, src_type), (dst, _, dst_type) = ends
    data: dict[str, Any] = {
        "SourceArn": source,
        "DestinationArn": destination,
        "AssociationType": kind or "AssociatedWith",
        "SourceType": src_type,
        "DestinationType": dst_type,
        "CreationTime": epoch(now),
        **({"SourceName": _name_of(src)} if _name_of(src) else {}),
        **({"DestinationName": _name_of(dst)} if _name_of(dst) else {}),
    }
    name = _edge_name(source, destination)
    try:
        return store.create_resource(
            Resource(
                ASSOCIATION, name, f"association:{name}", kind or "AssociatedWith", now, now, data, parent_arn=source
            )
        )
    except AlreadyExists:
        existing = store.get_resource(ASSOCIATION, name)
        assert existing is not None
        return existing


def delete_association(store: SqlStore, source: str, destination: str) -> None:
    try:
        store.delete_resource(ASSOCIATION, _edge_name(source, destination))
    except NotFound as exc:
        raise resource_not_found(f"There is no association from {source} to {destination}.") from exc


def edges_from(store: SqlStore, arn: str) -> list[Resource]:
    return store.list_resources(ASSOCIATION, parent_arn=arn)


def edges_to(store: SqlStore, arn: str) -> list[Resource]:
    return [r for r in store.list_resources(ASSOCIATION) if r.data["DestinationArn"] == arn]


def query(store: SqlStore, request: Mapping[str, Any]) -> dict[str, Any]:
    """QueryLineage: the vertices within MaxDepth of StartArns in Direction, filtered; and the edges walked."""
    direction = request.get("Direction") or "Both"
    depth = request.get("MaxDepth", DEFAULT_DEPTH)
    starts = list(request.get("StartArns") or [])
    every = store.list_resources(ASSOCIATION)
    down: dict[str, list[Resource]] = {}
    up: dict[str, list[Resource]] = {}
    for edge in every:
        down.setdefault(edge.data["SourceArn"], []).append(edge)
        up.setdefault(edge.data["DestinationArn"], []).append(edge)
    seen, walked, frontier = set(starts), {}, list(starts)
    for _ in range(depth):
        ahead = []
        for arn in frontier:
            steps = [(e, e.data["DestinationArn"]) for e in down.get(arn, [])] if direction != "Ascendants" else []
            if direction != "Descendants":
                steps += [(e, e.data["SourceArn"]) for e in up.get(arn, [])]
            for edge, other in steps:
                walked[edge.name] = edge
                if other not in seen:
                    seen.add(other)
                    ahead.append(other)
        frontier = ahead
    vertices = []
    for arn in sorted(seen - set(starts)):
        found = vertex(store, arn)
        if found is not None and _passes(found, request.get("Filters") or {}):
            vertices.append({"Arn": arn, "Type": found[2], "LineageType": found[1]})
    edges = (
        [{k: e.data[k] for k in ("SourceArn", "DestinationArn", "AssociationType")} for e in walked.values()]
        if request.get("IncludeEdges")
        else []
    )
    return {"Vertices": vertices, "Edges": edges}


def _passes(found: tuple[Resource, str, str], filters: Mapping[str, Any]) -> bool:
    row, lineage_type, kind = found
    if filters.get("Types") and kind not in filters["Types"]:
        return False
    if filters.get("LineageTypes") and lineage_type not in filters["LineageTypes"]:
        return False
    for member, when, newer in (
        ("CreatedAfter", row.created_at, True),
        ("CreatedBefore", row.created_at, False),
        ("ModifiedAfter", row.updated_at, True),
        ("ModifiedBefore", row.updated_at, False),
    ):
        bound = filters.get(member)
        if bound is not None and ((when <= bound) if newer else (when >= bound)):
            return False
    props = row.data.get("Properties") or {}
    return all(props.get(k) == v for k, v in (filters.get("Properties") or {}).items())


# --- what the platform records by itself ----------------------------------------------------------


def _inputs(kind: str, data: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(artifact type, source URI) of what a job reads."""
    out = []
    image = (data.get("AlgorithmSpecification") or {}).get("TrainingImage") or (data.get("AppSpecification") or {}).get(
        "ImageUri"
    )
    if image:
        out.append(("Image", image))
    for channel in data.get("InputDataConfig") or []:
        uri = ((channel.get("DataSource") or {}).get("S3DataSource") or {}).get("S3Uri")
        if uri:
            out.append(("DataSet", uri))
    out += [("DataSet", i["S3Input"]["S3Uri"]) for i in data.get("ProcessingInputs") or [] if i.get("S3Input")]
    source = ((data.get("TransformInput") or {}).get("DataSource") or {}).get("S3DataSource") or {}
    if source.get("S3Uri"):
        out.append(("DataSet", source["S3Uri"]))
    return out


def _outputs(data: Mapping[str, Any]) -> list[tuple[str, str]]:
    out = []
    model = (data.get("ModelArtifacts") or {}).get("S3ModelArtifacts")
    if model:
        out.append(("Model", model))
    outputs = (data.get("ProcessingOutputConfig") or {}).get("Outputs") or []
    out += [("DataSet", o["S3Output"]["S3Uri"]) for o in outputs if o.get("S3Output")]
    if (data.get("TransformOutput") or {}).get("S3OutputPath") and data.get("TransformJobStatus") == "Completed":
        out.append(("DataSet", data["TransformOutput"]["S3OutputPath"]))
    return out


class LineageRecorder:
    def __init__(self, store: SqlStore, clock: Callable[[], dt.datetime]) -> None:
        self.store = store
        self.clock = clock

    def watch(self, before: Resource | None, after: Resource) -> None:
        try:
            if after.kind in JOB_KINDS and after.status in ("InProgress", "Completed", "Stopped", "Failed"):
                self._job(before, after)
            elif (
                after.kind == "endpoint"
                and after.status == "InService"
                and (before is None or before.status != after.status)
            ):
                self._endpoint(after)
        except (ServiceError, NotFound, Conflict, AlreadyExists) as exc:
            log.warning("the lineage of %s %s was not recorded: %s", after.kind, after.name, exc)

    def _arn(self, template: str, resource: str) -> str:
        parts = template.split(":", 5)
        return ":".join([*parts[:5], resource])

    def artifact(self, template_arn: str, kind: str, uri: str) -> Resource:
        """The artifact of type ``kind`` for ``uri`` that the platform records (made on first use)."""
        artifact_id = hashlib.md5(f"{kind}|{uri}".encode(), usedforsecurity=False).hexdigest()
        row = self.store.get_resource(ARTIFACT, artifact_id)
        if row is not None:
            return row
        request = {"ArtifactType": kind, "Source": {"SourceUri": uri, "SourceTypes": []}}
        try:
            return create_artifact(self.store, lambda r: self._arn(template_arn, r), request, self.clock(), artifact_id)
        except AlreadyExists:
            found = self.store.get_resource(ARTIFACT, artifact_id)
            assert found is not None
            return found

    def _link(self, pairs: Iterable[tuple[str, str]], template: str, node: str, produced: bool) -> None:
        for kind, uri in pairs:
            art = self.artifact(template, kind, uri)
            source, dest = (node, art.arn) if produced else (art.arn, node)
            add_association(self.store, source, dest, "Produced" if produced else "ContributedTo", self.clock())

    def _job(self, before: Resource | None, job: Resource) -> None:
        component = self.store.get_resource(rec.COMPONENT, component_name(job.name, job.kind).lower())
        if component is None:
            return
        if before is None or before.status not in ("InProgress", "Completed", "Stopped", "Failed"):
            self._link(_inputs(job.kind, job.data), job.arn, component.arn, produced=False)
        if job.status in ("Completed", "Stopped") and (before is None or before.status != job.status):
            self._link(_outputs(job.data), job.arn, component.arn, produced=True)

    def _named(self, kind: str, template: str, request: dict[str, Any]) -> Resource:
        """The context or action ``request`` describes, made on first use."""
        member = "ContextName" if kind == CONTEXT else "ActionName"
        name = request[member].lower()
        row = self.store.get_resource(kind, name)
        if row is not None:
            return row
        arn = self._arn(template, f"{'context' if kind == CONTEXT else 'action'}/{name}")
        try:
            return create_named(self.store, kind, arn, request, self.clock())
        except ServiceError:
            found = self.store.get_resource(kind, name)
            assert found is not None
            return found

    def _endpoint(self, endpoint: Resource) -> None:
        """An endpoint's context, and for its configuration a ``ModelDeployment`` action that its variants'
        model artifacts contributed to: model -> deployment -> endpoint."""
        digest = hashlib.md5(endpoint.arn.encode(), usedforsecurity=False).hexdigest()[:8]
        context = self._named(
            CONTEXT,
            endpoint.arn,
            {
                "ContextName": f"{endpoint.name}-{digest}",
                "ContextType": "Endpoint",
                "Source": {"SourceUri": endpoint.arn, "SourceType": "ARN"},
            },
        )
        config_name = str(endpoint.data.get("EndpointConfigName", ""))
        config = self.store.get_resource("endpoint-config", config_name)
        if config is None:
            return
        config_digest = hashlib.md5(config.arn.encode(), usedforsecurity=False).hexdigest()[:8]
        action = self._named(
            ACTION,
            endpoint.arn,
            {
                "ActionName": f"{config_name[:100]}-{config_digest}-deployment",
                "ActionType": "ModelDeployment",
                "Source": {"SourceUri": config.arn, "SourceType": "ARN"},
                "Status": "Completed",
            },
        )
        add_association(self.store, action.arn, context.arn, "AssociatedWith", self.clock())
        for variant in config.data.get("ProductionVariants") or []:
            model = self.store.get_resource("model", str(variant.get("ModelName", "")))
            container = (
                (model.data.get("PrimaryContainer") or (model.data.get("Containers") or [{}])[0]) if model else {}
            )
            if container.get("ModelDataUrl"):
                self._link([("Model", container["ModelDataUrl"])], endpoint.arn, action.arn, produced=False)
