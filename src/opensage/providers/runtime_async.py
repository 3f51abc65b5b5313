"""SageMaker Runtime's InvokeEndpointAsync: queue a request whose input is in S3, answer 202 at once.

The request is recorded durably by :class:`~opensage.serving.asyncinference.AsyncInference` before
the answer; its result appears at the OutputLocation (or the model's error at the FailureLocation)
once a model server has answered it.

LIMITATIONS: InputLocation must be an ``s3://`` URI (AWS also takes the https form).
"""

from __future__ import annotations

from typing import Any

from opensage.aws.context import RequestContext
from opensage.errors import ServiceError
from opensage.serving.asyncinference import AsyncInference, NotAsync
from opensage.serving.endpoints import NoEndpoint


class AsyncInvocations:
    """The InvokeEndpointAsync operation of the runtime provider."""

    asynchronous: AsyncInference | None

    async def invoke_endpoint_async(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        name = request["EndpointName"]
        location = request["InputLocation"]
        if not location.startswith("s3://"):
            raise ServiceError(
                "ValidationError", f"InputLocation must be an S3 URI (s3://bucket/key); got {location!r}."
            )
        if self.asynchronous is None:
            raise ServiceError("ValidationError", f"Endpoint {name} is not an asynchronous endpoint.")
        try:
            accepted = await self.asynchronous.submit(
                name,
                location,
                content_type=request.get("ContentType", ""),
                accept=request.get("Accept", ""),
                custom_attributes=request.get("CustomAttributes"),
                inference_id=request.get("InferenceId"),
                ttl_s=request.get("RequestTTLSeconds"),
                timeout_s=request.get("InvocationTimeoutSeconds"),
                extension=request.get("S3OutputPathExtension"),
                filename=request.get("Filename"),
            )
        except NoEndpoint as exc:
            raise ServiceError("ValidationError", f"Endpoint {name} of account {ctx.account_id} not found.") from exc
        except NotAsync as exc:
            raise ServiceError(
                "ValidationError",
                f"Endpoint {name} is not an asynchronous endpoint: its endpoint config has no AsyncInferenceConfig; "
                "call InvokeEndpoint, or deploy it with an AsyncInferenceConfig.",
            ) from exc
        answer = {"InferenceId": accepted.inference_id, "OutputLocation": accepted.output_location}
        if accepted.failure_location:
            answer["FailureLocation"] = accepted.failure_location
        return answer
