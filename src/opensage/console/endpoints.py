"""Endpoints: variants with the health of each model server, live invocation charts, invoke, weights, delete."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from opensage.console import endpoint_options, experiments, forms, monitoring
from opensage.console.pages import BASE, Console, Page, page, redirect
from opensage.errors import ServiceError

METRICS_INTERVAL_S = 2.0
CONTENT_TYPES = ("text/csv", "application/json", "application/jsonlines", "text/libsvm")


def endpoint_types(config: Mapping[str, Any], models: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """What an endpoint config makes of its endpoint, as the console labels it: ``async`` (it has an
    AsyncInferenceConfig), ``serverless`` (a variant has a ServerlessConfig), ``multi-model`` (a
    variant's model has a container in Mode MultiModel); ``real-time`` when none of them applies.

    ``models`` holds the DescribeModel documents of the config's variants, by model name.
    """
    types = []
    variants = config.get("ProductionVariants") or []
    if config.get("AsyncInferenceConfig"):
        types.append("async")
    if any(v.get("ServerlessConfig") for v in variants):
        types.append("serverless")
    for v in variants:
        model = models.get(v.get("ModelName", "")) or {}
        containers = [model.get("PrimaryContainer") or {}, *(model.get("Containers") or [])]
        if any(c.get("Mode") == "MultiModel" for c in containers):
            types.append("multi-model")
            break
    return types or ["real-time"]


async def with_types(p: Page, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """ListEndpoints items with their ``EndpointTypes`` (from the stored config and models)."""
    documents = await asyncio.gather(*(asyncio.to_thread(p.api.endpoint_documents, i["EndpointName"]) for i in items))
    return [{**i, "EndpointTypes": endpoint_types(*d) if d[0] else []} for i, d in zip(items, documents, strict=True)]


async def _context(p: Page, name: str) -> dict[str, Any]:
    desc = await p.api.describe(p.session, "DescribeEndpoint", "endpoint", EndpointName=name)
    try:
        config = await p.api.sagemaker(
            p.session, "DescribeEndpointConfig", EndpointConfigName=desc["EndpointConfigName"]
        )
    except ServiceError:
        config = {"ProductionVariants": []}
    configured = {v["VariantName"]: v for v in config.get("ProductionVariants", [])}
    variants = []
    for v in desc.get("ProductionVariants") or config.get("ProductionVariants", []):
        c = configured.get(v["VariantName"], {})
        variants.append(
            {
                "name": v["VariantName"],
                "model": c.get("ModelName", ""),
                "instance_type": c.get("InstanceType", ""),
                "weight": v.get("CurrentWeight", c.get("InitialVariantWeight", "")),
                "count": v.get("CurrentInstanceCount", c.get("InitialInstanceCount", "")),
                "desired_count": v.get("DesiredInstanceCount", ""),
            }
        )
    documents = await asyncio.to_thread(p.api.endpoint_documents, name)
    types = endpoint_types(*documents) if documents[0] else []
    health = p.api.endpoint_health(name)
    return {
        "endpoint": desc,
        "name": name,
        "types": types,
        "variants": variants,
        "health": health,
        "options": await endpoint_options.options(p, name, desc, documents[0], types, health),
        "monitoring": await monitoring.monitoring(p, name),
        "lineage": await experiments.endpoint_lineage(p, desc["EndpointArn"]),
        "content_types": CONTENT_TYPES,
        "invoke": {"body": "", "content_type": "text/csv", "result": None},
        "errors": {},
    }


@page
async def endpoint(p: Page) -> Response:
    return p.render("endpoint_detail.html", **await _context(p, p.request.path_params["name"]))


async def _invoke(p: Page, name: str, body: str, content_type: str) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        answer = await p.api.call(
            p.session,
            "sagemaker-runtime",
            "InvokeEndpoint",
            {"EndpointName": name, "Body": body.encode(), "ContentType": content_type},
        )
    except ServiceError as exc:
        return {"ok": False, "code": exc.code, "message": exc.message}
    return {
        "ok": True,
        "body": bytes(answer["Body"]).decode("utf-8", "replace"),
        "content_type": answer.get("ContentType", ""),
        "variant": answer.get("InvokedProductionVariant", ""),
        "ms": round((time.perf_counter() - started) * 1000, 1),
    }


@page
async def invoke_endpoint(p: Page) -> Response:
    name = p.request.path_params["name"]
    body, content_type = p.field("body"), p.field("content_type", "text/csv")
    result = await _invoke(p, name, body, content_type)
    if p.htmx:
        return p.render("_invoke_result.html", result=result)
    context = await _context(p, name)
    context["invoke"] = {"body": body, "content_type": content_type, "result": result}
    return p.render("endpoint_detail.html", **context)


@page
async def update_weights(p: Page) -> Response:
    name = p.request.path_params["name"]
    context = await _context(p, name)
    variants = [v["name"] for v in context["variants"]]
    request = forms.weights_request(name, variants, p.fields())
    paths = {}
    for i, v in enumerate(variants, 1):
        paths[f"desiredWeightsAndCapacities.{i}.member.desiredWeight"] = f"weight_{v}"
        paths[f"desiredWeightsAndCapacities.{i}.member.desiredInstanceCount"] = f"count_{v}"
    missing = forms.required(p.fields(), {f"weight_{v}": f"The weight of {v}" for v in variants})
    try:
        await p.api.sagemaker(p.session, "UpdateEndpointWeightsAndCapacities", **request)
    except ServiceError as exc:
        context["errors"] = {**forms.field_errors(exc, paths), **missing}
        return p.render("endpoint_detail.html", 400, **context)
    return redirect(f"{BASE}/endpoints/{quote(name)}")


@page
async def delete_endpoint(p: Page) -> Response:
    name = p.request.path_params["name"]
    await p.api.describe(p.session, "DescribeEndpoint", "endpoint", EndpointName=name)
    await p.api.sagemaker(p.session, "DeleteEndpoint", EndpointName=name)
    return redirect(f"{BASE}/endpoints")


async def _metric_events(console: Console, request: Request, name: str) -> AsyncIterator[str]:
    api = console.api
    yield "retry: 3000\n\n"
    while True:
        row = await asyncio.to_thread(api.store.get_resource, "endpoint", name)
        if row is None:
            yield f"event: gone\ndata: {json.dumps({'name': name})}\n\n"
            return
        data = {
            "status": row.status,
            "series": await asyncio.to_thread(api.endpoint_series, name),
            "health": api.endpoint_health(name),
        }
        yield f"event: metrics\ndata: {json.dumps(data)}\n\n"
        if await request.is_disconnected():
            return
        await asyncio.sleep(METRICS_INTERVAL_S)


@page
async def endpoint_metrics(p: Page) -> Response:
    """Server-sent events: invocation, error and latency series, status and model-server health, every 2 s."""
    name = p.request.path_params["name"]
    await p.api.describe(p.session, "DescribeEndpoint", "endpoint", EndpointName=name)
    return StreamingResponse(
        _metric_events(p.console, p.request, name),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
