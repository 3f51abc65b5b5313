"""Training jobs: the create form, the detail page with its metric charts (its live log: ``logs.py``), Stop
and Deploy."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from typing import Any
from urllib.parse import quote

from starlette.responses import JSONResponse, Response

from opensage.console import forms
from opensage.console.pages import BASE, Page, page, redirect
from opensage.errors import ServiceError


def _form_defaults(p: Page, algorithm: forms.Algorithm) -> dict[str, str]:
    region = p.api.region
    return {
        "algorithm": algorithm.key,
        "name": f"{algorithm.key}-{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}",
        "train": "",
        "validation": "",
        "content_type": algorithm.content_types[0],
        "instance_type": "ml.m5.large",
        "instance_count": "1",
        "max_runtime": "3600",
        "output_path": f"s3://sagemaker-{region}-{p.api.account_id}/training-output",
        "role": p.api.default_role_arn,
        **{f"hp_{h.name}": h.default for h in algorithm.hyperparameters},
    }


def _render_form(p: Page, values: dict[str, str], errors: dict[str, list[str]], status: int = 200) -> Response:
    algorithm = forms.ALGORITHMS.get(values.get("algorithm", ""), forms.ALGORITHMS["xgboost"])
    return p.render(
        "training_new.html",
        status,
        algorithms=forms.ALGORITHMS.values(),
        algorithm=algorithm,
        values=values,
        errors=errors,
        instance_types=forms.instance_choices(),
    )


@page
async def new_training_job(p: Page) -> Response:
    algorithm = forms.ALGORITHMS.get(p.request.query_params.get("algorithm", ""), forms.ALGORITHMS["xgboost"])
    values = _form_defaults(p, algorithm)
    if p.request.query_params.get("train"):
        values["train"] = p.request.query_params["train"]
    return _render_form(p, values, {})


@page
async def create_training_job(p: Page) -> Response:
    values = p.fields()
    algorithm = forms.ALGORITHMS.get(values.get("algorithm", ""))
    if algorithm is None:
        return _render_form(p, values, {"algorithm": ["Choose one of the built-in algorithms."]}, 400)
    request = forms.training_request(values, algorithm, p.api.region)
    errors: dict[str, list[str]] = {}
    # The API takes any hyperparameters (the container checks them when the job starts): check them here
    # too, so a bad value is shown beside its field instead of failing the job a few seconds later.
    problem = algorithm.check(request["HyperParameters"])
    if problem:
        errors[algorithm.field_of(problem)] = [problem]
    try:
        p.api.check("sagemaker", "CreateTrainingJob", request)
        if not errors:
            await p.api.sagemaker(p.session, "CreateTrainingJob", **request)
    except ServiceError as exc:
        for field, messages in forms.field_errors(exc, forms.TRAINING_PATHS, forms.TRAINING_WORDS).items():
            errors.setdefault(field, []).extend(messages)
    errors.update(forms.required(values, forms.TRAINING_REQUIRED))
    if errors:
        return _render_form(p, values, errors, 400)
    return redirect(f"{BASE}/training-jobs/{quote(request['TrainingJobName'])}")


@page
async def check_hyperparameters(p: Page) -> Response:
    """htmx: the container's validation of the form's hyperparameters, as a message beside the field."""
    values = p.fields()
    algorithm = forms.ALGORITHMS.get(values.get("algorithm", ""), forms.ALGORITHMS["xgboost"])
    hps = {h.name: values.get(f"hp_{h.name}", "").strip() for h in algorithm.hyperparameters}
    message = algorithm.check({k: v for k, v in hps.items() if v})
    field = algorithm.field_of(message) if message else ""
    return p.render("_hp_check.html", algorithm=algorithm, message=message, field=field)


@page
async def s3_picker(p: Page) -> Response:
    """htmx: one level of the S3 browser inside the create form; a click puts the URI into ``target``."""
    target = p.request.query_params.get("target", "train")
    uri = p.request.query_params.get("uri", "")
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    listing = buckets = None
    if bucket:
        listing = await asyncio.to_thread(p.api.browse, bucket, prefix)
    else:
        buckets = await asyncio.to_thread(p.api.buckets)
    parent = ""
    if bucket:
        parts = prefix.rstrip("/").split("/")[:-1] if prefix else []
        parent = f"s3://{bucket}/" + "".join(x + "/" for x in parts) if prefix else ""
    return p.render(
        "_s3_picker.html", target=target, bucket=bucket, prefix=prefix, listing=listing, buckets=buckets, parent=parent
    )


@page
async def training_job(p: Page) -> Response:
    name = p.request.path_params["name"]
    desc = await p.api.describe(p.session, "DescribeTrainingJob", "training job", TrainingJobName=name)
    artifact = desc.get("ModelArtifacts", {}).get("S3ModelArtifacts", "")
    return p.render(
        "training_detail.html",
        job=desc,
        name=name,
        artifact=artifact,
        deploy=_deploy_values(desc),
        errors={},
        instance_types=forms.instance_choices(),
    )


def _deploy_values(desc: dict[str, Any], form: dict[str, str] | None = None) -> dict[str, str]:
    form = form or {}
    return {
        "endpoint_name": form.get("endpoint_name", desc["TrainingJobName"]),
        "instance_type": form.get("instance_type", "ml.m5.large"),
        "instance_count": form.get("instance_count", "1"),
    }


@page
async def stop_training_job(p: Page) -> Response:
    name = p.request.path_params["name"]
    await p.api.describe(p.session, "DescribeTrainingJob", "training job", TrainingJobName=name)
    with contextlib.suppress(ServiceError):  # it ended meanwhile: the page shows how
        await p.api.sagemaker(p.session, "StopTrainingJob", TrainingJobName=name)
    return redirect(f"{BASE}/training-jobs/{quote(name)}")


@page
async def deploy_training_job(p: Page) -> Response:
    name = p.request.path_params["name"]
    desc = await p.api.describe(p.session, "DescribeTrainingJob", "training job", TrainingJobName=name)
    values = _deploy_values(desc, p.fields())
    artifact = desc.get("ModelArtifacts", {}).get("S3ModelArtifacts", "")
    steps = forms.deploy_requests(
        values["endpoint_name"].strip(),
        desc["AlgorithmSpecification"]["TrainingImage"],
        artifact,
        desc["RoleArn"],
        values["instance_type"],
        values["instance_count"],
    )
    errors: dict[str, list[str]] = {}
    if desc["TrainingJobStatus"] != "Completed" or not artifact:
        errors[forms.FORM] = ["Only a completed training job with a model artifact can be deployed."]
    try:
        for operation, request in steps:  # all three are checked before anything is created
            p.api.check("sagemaker", operation, request)
        for operation, request in steps:
            await p.api.sagemaker(p.session, operation, **request)
    except ServiceError as exc:
        errors = forms.field_errors(exc, forms.DEPLOY_PATHS, {"already existing": "endpoint_name"})
    errors.update(forms.required(values, forms.DEPLOY_REQUIRED))
    if errors:
        return p.render(
            "training_detail.html",
            400,
            job=desc,
            name=name,
            artifact=artifact,
            deploy=values,
            errors=errors,
            instance_types=forms.instance_choices(),
        )
    return redirect(f"{BASE}/endpoints/{quote(values['endpoint_name'].strip())}")


@page
async def training_metrics(p: Page) -> Response:
    name = p.request.path_params["name"]
    desc = await p.api.describe(p.session, "DescribeTrainingJob", "training job", TrainingJobName=name)
    series = await asyncio.to_thread(p.api.metric_series, name, desc)
    return JSONResponse({"status": desc["TrainingJobStatus"], "series": series})
