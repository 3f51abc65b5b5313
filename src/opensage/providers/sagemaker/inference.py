"""SageMaker models, endpoint configs and endpoints.

LIMITATIONS: one container per model from an OpenSage built-in image; updates are always
blue/green (a ``DeploymentConfig`` is recorded, rolling and canary steps are not taken); a model
may be deleted while an endpoint uses it (as on AWS: the endpoint keeps serving). Accepted, recorded
and without effect on one machine: ``VpcConfig``, ``KmsKeyId``, ``VolumeSizeInGB``,
``ModelDataDownloadTimeoutInSeconds``, ``ContainerStartupHealthCheckTimeoutInSeconds``,
``EnableSSMAccess``, ``InferenceAmiVersion``, ``AcceleratorType``. Refused with a
ValidationException, because the endpoint would not do what they ask: the members in
:data:`MODEL_UNSUPPORTED` and :data:`CONFIG_UNSUPPORTED` (shadow variants, inference pipelines).
A container's ``Mode: MultiModel`` serves the models under its ``ModelDataUrl`` prefix by
``TargetModel`` (:mod:`opensage.serving.multimodel`). ``AsyncInferenceConfig`` and a variant's
``ServerlessConfig`` are applied (:mod:`opensage.serving.options`). ``DataCaptureConfig`` is applied
(:mod:`opensage.serving.capture`); its ``KmsKeyId`` is recorded, the capture files are written
with the bucket's own encryption.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from typing import Any

from opensage import states
from opensage.aws.context import RequestContext
from opensage.compute import instances
from opensage.errors import AlreadyExists, NotFound, not_found, validation_error
from opensage.providers.sagemaker.listing import list_page
from opensage.providers.sagemaker.quotas import QuotaChecks
from opensage.providers.sagemaker.unsupported import Unsupported, enabled, refuse, refuse_nul
from opensage.serving import options as inference_options
from opensage.serving.capture import describe as capture_description
from opensage.serving.endpoints import CONFIG, ENDPOINT, MODEL, EndpointEngine, variant_description
from opensage.serving.fleet import unknown_instance_type
from opensage.serving.specs import EndpointConfigSpec, EndpointSpec
from opensage.states import EndpointStatus
from opensage.store.entities import Resource
from opensage.store.sql import SqlStore
from opensage.timestamps import epoch as _epoch
from opensage.timestamps import jsonable


def _public(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if not k.startswith("_") and k != "Tags"}


def _check_multi_model(request: dict[str, Any]) -> None:
    """A multi-model container (``Mode: MultiModel``) names an S3 prefix, not one artifact."""
    for container in [request.get("PrimaryContainer") or {}, *(request.get("Containers") or [])]:
        url = str(container.get("ModelDataUrl") or "")
        if container.get("Mode") == "MultiModel" and (not url.startswith("s3://") or url.endswith(".tar.gz")):
            raise validation_error(
                f"A container in MultiModel mode needs ModelDataUrl to be the S3 prefix of its models "
                f"(s3://bucket/prefix/), each model a model.tar.gz under it; got '{url}'."
            )


MODEL_UNSUPPORTED = (
    Unsupported(
        "Containers",
        "inference pipelines (more than one container) are not supported; give one container.",
        lambda v: isinstance(v, list) and len(v) > 1,
    ),
    Unsupported(
        "PrimaryContainer.ImageConfig",
        "images from private registries are not supported; use an image URI of an OpenSage built-in image.",
    ),
    Unsupported("PrimaryContainer.AdditionalModelDataSources", "additional model data sources are not supported."),
)
CONFIG_UNSUPPORTED = (
    Unsupported(
        "ShadowProductionVariants",
        "shadow variants are not supported; use two ProductionVariants with weights (A/B) instead.",
    ),
    Unsupported("ExplainerConfig", "online explainability is not supported; leave it out."),
    Unsupported("ProductionVariants[].InstancePools", "instance pools are not supported; give one InstanceType."),
    Unsupported(
        "ProductionVariants[].ManagedInstanceScaling",
        "managed instance scaling is not supported yet; leave it out.",
        enabled("Status"),
    ),
)


class InferenceOperations:
    store: SqlStore
    clock: Callable[[], dt.datetime]
    endpoints: EndpointEngine
    quotas: QuotaChecks
    _require_role: Callable[[RequestContext, str], None]

    def _create(self, kind: str, name: str, arn: str, status: str, data: dict[str, Any], exists: str) -> None:
        now = self.clock()
        try:
            self.store.create_resource(Resource(kind, name, arn, status, now, now, data))
        except AlreadyExists as exc:
            raise validation_error(exists) from exc

    def _get(self, kind: str, name: str, label: str) -> Resource:
        row = self.store.get_resource(kind, name)
        if row is None:
            raise not_found(f'Could not find {label} "{name}".')
        return row

    # --- models -------------------------------------------------------------------------------------

    def create_model(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        if not request.get("PrimaryContainer") and not request.get("Containers"):
            raise validation_error("A model needs a PrimaryContainer (or Containers).")
        refuse(request, MODEL_UNSUPPORTED)
        refuse_nul(request, ("PrimaryContainer.Environment", "Containers[].Environment"))
        _check_multi_model(request)
        if request.get("ExecutionRoleArn"):
            self._require_role(ctx, request["ExecutionRoleArn"])
        name = request["ModelName"]
        arn = ctx.arn("sagemaker", f"model/{name.lower()}")
        data = {**jsonable(_public(request)), "ModelArn": arn, "CreationTime": _epoch(self.clock())}
        self._create(MODEL, name, arn, "", data, f'Cannot create already existing model "{arn}".')
        return {"ModelArn": arn}

    def describe_model(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        return _public(self._get(MODEL, request["ModelName"], "model").data)

    def list_models(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        rows, token = list_page(self.store, MODEL, request)
        return {
            "Models": [{"ModelName": r.name, "ModelArn": r.arn, "CreationTime": r.data["CreationTime"]} for r in rows],
            "NextToken": token,
        }

    def delete_model(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        try:
            self.store.delete_resource(MODEL, request["ModelName"])
        except NotFound as exc:
            raise not_found(f'Could not find model "{request["ModelName"]}".') from exc
        return {}

    # --- endpoint configs -------------------------------------------------------------------------------

    def create_endpoint_config(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        refuse(request, CONFIG_UNSUPPORTED)
        problem = inference_options.config_problem(request)  # AsyncInferenceConfig, ServerlessConfig
        if problem:
            raise validation_error(problem)
        capture = request.get("DataCaptureConfig") or {}
        if capture and not str(capture.get("DestinationS3Uri", "")).startswith("s3://"):
            raise validation_error("DataCaptureConfig.DestinationS3Uri must be an S3 URI (s3://bucket/prefix).")
        variants = request["ProductionVariants"]
        names = [v["VariantName"] for v in variants]
        if len(names) != len(set(names)):
            raise validation_error(f"Variant names must be unique within an endpoint config; got {names}.")
        for v in variants:
            if self.store.get_resource(MODEL, v["ModelName"]) is None:
                raise not_found(f'Could not find model "{ctx.arn("sagemaker", "model/" + v["ModelName"].lower())}".')
            if v.get("ServerlessConfig") is None and not v.get("InstanceType"):
                raise validation_error(f"Variant {v['VariantName']} needs an InstanceType.")
            if v.get("InstanceType") and instances.lookup(v["InstanceType"]) is None:
                raise validation_error(f"Variant {v['VariantName']}: {unknown_instance_type(v['InstanceType'])}")
        spec = EndpointConfigSpec.from_request(_public(request))
        arn = ctx.arn("sagemaker", f"endpoint-config/{spec.name.lower()}")
        data = spec.initial_description(arn, self.clock())
        exists = f'Cannot create already existing endpoint configuration "{arn}".'
        self._create(CONFIG, spec.name, arn, "", data, exists)
        return {"EndpointConfigArn": arn}

    def describe_endpoint_config(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        return _public(self._get(CONFIG, request["EndpointConfigName"], "endpoint configuration").data)

    def list_endpoint_configs(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        rows, token = list_page(self.store, CONFIG, request)
        return {
            "EndpointConfigs": [
                {"EndpointConfigName": r.name, "EndpointConfigArn": r.arn, "CreationTime": r.data["CreationTime"]}
                for r in rows
            ],
            "NextToken": token,
        }

    def delete_endpoint_config(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        try:
            self.store.delete_resource(CONFIG, request["EndpointConfigName"])
        except NotFound as exc:
            raise not_found(f'Could not find endpoint configuration "{request["EndpointConfigName"]}".') from exc
        return {}

    # --- endpoints --------------------------------------------------------------------------------------

    async def create_endpoint(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        spec = EndpointSpec.from_request(request)
        config = await asyncio.to_thread(self._get, CONFIG, spec.config_name, "endpoint configuration")
        await asyncio.to_thread(self.quotas.endpoint, config.data)
        arn = ctx.arn("sagemaker", f"endpoint/{spec.name.lower()}")
        try:
            await self.endpoints.create(spec, arn)
        except AlreadyExists as exc:
            raise validation_error(f'Cannot create already existing endpoint "{arn}".') from exc
        return {"EndpointArn": arn}

    def describe_endpoint(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        answer = _public(self._get(ENDPOINT, request["EndpointName"], "endpoint").data)
        config = self.store.get_resource(CONFIG, answer.get("EndpointConfigName", ""))
        capture = capture_description(config.data.get("DataCaptureConfig") if config else None)
        if capture is not None:
            answer["DataCaptureConfig"] = capture
        inference_options.describe(answer, config.data if config else None)
        return answer

    def list_endpoints(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        rows, token = list_page(self.store, ENDPOINT, request)
        keys = ("EndpointName", "EndpointArn", "CreationTime", "LastModifiedTime", "EndpointStatus")
        return {"Endpoints": [{k: r.data[k] for k in keys if k in r.data} for r in rows], "NextToken": token}

    async def update_endpoint(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        name, config_name = request["EndpointName"], request["EndpointConfigName"]
        row = await asyncio.to_thread(self._get, ENDPOINT, name, "endpoint")
        await asyncio.to_thread(self._get, CONFIG, config_name, "endpoint configuration")
        await self._to_updating(row)
        self.endpoints.launch_update(name, config_name)
        return {"EndpointArn": row.arn}

    async def _to_updating(self, row: Resource) -> None:
        """InService -> Updating with a compare-and-set: an endpoint in any other status refuses the update."""
        change = states.transition(
            ENDPOINT, EndpointStatus.UPDATING, self.clock(), only_from=frozenset({EndpointStatus.IN_SERVICE})
        )
        try:
            await asyncio.to_thread(self.store.modify_resource, ENDPOINT, row.name, change, now=self.clock())
        except states.IllegalTransition as exc:
            raise validation_error(f'Cannot update in-progress endpoint "{row.arn}" (it is {exc.current}).') from exc
        except NotFound as exc:
            raise not_found(f'Could not find endpoint "{row.name}".') from exc

    async def update_endpoint_weights_and_capacities(
        self, ctx: RequestContext, request: dict[str, Any]
    ) -> dict[str, Any]:
        name = request["EndpointName"]
        row = await asyncio.to_thread(self._get, ENDPOINT, name, "endpoint")
        if row.status != EndpointStatus.IN_SERVICE or not self.endpoints.is_serving(name):
            raise validation_error(f'Cannot update in-progress endpoint "{row.arn}" (it is {row.status}).')
        current = {v["VariantName"]: v for v in row.data.get("ProductionVariants", [])}
        weights, counts = {}, {}
        for desired in request["DesiredWeightsAndCapacities"]:
            if desired["VariantName"] not in current:
                raise validation_error(f"The variant {desired['VariantName']} does not exist in endpoint {name}.")
            if "DesiredWeight" in desired:
                weights[desired["VariantName"]] = float(desired["DesiredWeight"])
            if desired.get("DesiredInstanceCount") is not None:
                counts[desired["VariantName"]] = int(desired["DesiredInstanceCount"])
        await self._to_updating(row)
        self.endpoints.set_weights(name, weights)
        self.endpoints.launch_scale(name, counts)
        return {"EndpointArn": row.arn}

    async def delete_endpoint(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        name = request["EndpointName"]
        change = states.transition(ENDPOINT, EndpointStatus.DELETING, self.clock())
        try:
            await asyncio.to_thread(self.store.modify_resource, ENDPOINT, name, change, now=self.clock())
        except NotFound as exc:
            raise not_found(f'Could not find endpoint "{name}".') from exc
        await self.endpoints.delete(name)
        return {}


__all__ = ["InferenceOperations", "variant_description"]
