"""SageMaker Runtime: InvokeEndpoint through the endpoint router; InvokeEndpointAsync (:mod:`.runtime_async`).

LIMITATIONS: InvokeEndpoint and InvokeEndpointAsync only (no streaming invocations, no sessions, no
TargetContainerHostname routing); the model's response is answered in full. TargetModel routes on
multi-model endpoints.
"""

from __future__ import annotations

import time
from typing import Any

from opensage.aws.context import RequestContext
from opensage.errors import ServiceError
from opensage.providers.runtime_async import AsyncInvocations
from opensage.serving.asyncinference import AsyncInference
from opensage.serving.capture import DataCapture
from opensage.serving.endpoints import EndpointEngine, NoEndpoint, NotReady, NoVariant
from opensage.serving.forward import TargetModelError
from opensage.serving.metrics import InvocationMetrics
from opensage.serving.serverless import Serverless, StillProvisioning, Throttled


class RuntimeProvider(AsyncInvocations):
    def __init__(
        self,
        endpoints: EndpointEngine,
        metrics: InvocationMetrics,
        capture: DataCapture | None = None,
        asynchronous: AsyncInference | None = None,
        serverless: Serverless | None = None,
    ) -> None:
        self.endpoints = endpoints
        self.metrics = metrics
        self.capture = capture  # the endpoints' data capture (DataCaptureConfig)
        self.asynchronous = asynchronous  # the asynchronous endpoints' queue (InvokeEndpointAsync)
        self.gate: EndpointEngine | Serverless = serverless or endpoints  # serverless variants' admission

    async def invoke_endpoint(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        name = request["EndpointName"]
        try:
            answer = await self.gate.invoke(
                name,
                request.get("Body", b""),
                request.get("ContentType", ""),
                request.get("Accept", ""),
                request.get("TargetVariant"),
                request.get("CustomAttributes"),
                target_model=request.get("TargetModel"),
            )
        except TargetModelError as exc:  # multi-model endpoints (serving.multimodel)
            raise ServiceError("ValidationError", str(exc)) from exc
        except NoEndpoint as exc:
            raise ServiceError("ValidationError", f"Endpoint {name} of account {ctx.account_id} not found.") from exc
        except NoVariant as exc:
            raise ServiceError(
                "ValidationError", f"Variant {request.get('TargetVariant')} not found for Endpoint {name}."
            ) from exc
        except Throttled as exc:  # a serverless variant at its MaxConcurrency
            raise ServiceError("ThrottlingException", "Rate exceeded", 400) from exc
        except StillProvisioning as exc:
            raise ServiceError(
                "ModelNotReadyException",
                f"The serverless endpoint {name} is still provisioning its resources ({exc}); try again shortly.",
                429,
            ) from exc
        except NotReady as exc:
            raise ServiceError(
                "ServiceUnavailable",
                f"No instance of endpoint {name} is ready to serve ({exc}); try again shortly.",
                503,
                sender_fault=False,
            ) from exc
        elapsed = time.perf_counter() - (ctx.received or time.perf_counter())
        status = 200 if answer.status == 200 else 424 if answer.status else 500
        self.metrics.record(
            name, answer.variant, status, answer.model_seconds * 1e6, max(0.0, elapsed - answer.model_seconds) * 1e6
        )
        if answer.status != 200:
            kind = "client" if 400 <= answer.status < 500 else "server"
            message = answer.body.decode("utf-8", "replace")[:2000]
            log_arn = ctx.arn("logs", f"log-group:/aws/sagemaker/Endpoints/{name}")
            raise ServiceError(
                "ModelError",
                f'Received {kind} error ({answer.status}) from primary with message "{message}". '
                f"See {log_arn} for more information.",
                424,
                fields={"OriginalStatusCode": answer.status, "OriginalMessage": message, "LogStreamArn": log_arn},
            )
        if self.capture is not None:
            self.capture.record(
                name, answer.variant, request.get("ContentType", ""), request.get("Body", b""),
                answer.content_type, answer.body,
            )
        return {"Body": answer.body, "ContentType": answer.content_type, "InvokedProductionVariant": answer.variant}
