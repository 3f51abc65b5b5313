"""Console forms: the built-in algorithms offered, form fields -> API request dicts, API errors -> fields.

A form is turned into the request the API takes (a value that is not a number stays a string, so the
service model's validation answers it with the API's own message); a ``ValidationException`` is split
into its violations and each is shown next to the field its member path belongs to.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from opensage.compute import instances
from opensage.errors import ServiceError

FORM = "_form"  # errors that belong to no one field
INSTANCE_TYPES = ("ml.m5.large", "ml.m5.xlarge", "ml.m5.2xlarge", "ml.c5.xlarge", "ml.c5.2xlarge", "local")
_VIOLATION = re.compile(r"Value (?:'.*?'|null) at '([^']+)' failed to satisfy constraint: .+?(?=; Value |$)")


@dataclass(frozen=True, slots=True)
class Hyperparameter:
    name: str
    default: str
    help: str
    choices: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Algorithm:
    """A built-in algorithm the create form offers: its image and the hyperparameters shown."""

    key: str
    label: str
    repository: str
    tag: str
    content_types: tuple[str, ...]
    hyperparameters: tuple[Hyperparameter, ...]
    validator: str  # "module:function" raising ValueError with a message naming the hyperparameter

    def image(self, region: str) -> str:
        return f"683313688378.dkr.ecr.{region}.amazonaws.com/{self.repository}:{self.tag}"

    def check(self, values: Mapping[str, str]) -> str | None:
        """The container's own hyperparameter validation: its message, or None when the values are valid."""
        module, _, function = self.validator.partition(":")
        try:
            getattr(importlib.import_module(module), function)(dict(values))
        except ValueError as exc:
            return str(exc)
        return None

    def field_of(self, message: str) -> str:
        """The hyperparameter a validation message names (the longest name found), else the form."""
        names = sorted((h.name for h in self.hyperparameters), key=len, reverse=True)
        return next((f"hp_{n}" for n in names if re.search(rf"\b{re.escape(n)}\b", message)), "hyperparameters")


_OBJECTIVES = (
    "reg:squarederror",
    "reg:logistic",
    "binary:logistic",
    "binary:hinge",
    "multi:softmax",
    "multi:softprob",
    "count:poisson",
    "rank:pairwise",
)
ALGORITHMS = {
    "xgboost": Algorithm(
        "xgboost",
        "XGBoost 1.7-1",
        "sagemaker-xgboost",
        "1.7-1",
        ("text/csv", "text/libsvm", "application/x-parquet"),
        (
            Hyperparameter("num_round", "100", "boosting rounds, an integer ≥ 1 (required)"),
            Hyperparameter("objective", "reg:squarederror", "the learning task", _OBJECTIVES),
            Hyperparameter("eval_metric", "", "e.g. logloss, auc, rmse; empty: the objective's default"),
            Hyperparameter("max_depth", "6", "tree depth, an integer ≥ 0"),
            Hyperparameter("eta", "0.3", "learning rate, in [0, 1]"),
            Hyperparameter("min_child_weight", "1", "≥ 0"),
            Hyperparameter("subsample", "1", "row sampling ratio, in (0, 1]"),
            Hyperparameter("num_class", "", "classes, for multi:* objectives (≥ 2)"),
            Hyperparameter("early_stopping_rounds", "", "stop after this many rounds without improvement"),
        ),
        "opensage.images.xgboost.hyperparameters:validate",
    )
}


def instance_choices() -> list[tuple[str, str]]:
    out = []
    for name in INSTANCE_TYPES:
        it = instances.lookup(name)
        out.append((name, f"{name} ({it.vcpus} vCPU, {it.memory_gib:g} GiB)" if it else name))
    return out


def number(text: str | None) -> Any:
    """An int for an integer text; anything else stays text so the model's validation names it."""
    value = (text or "").strip()
    return int(value) if re.fullmatch(r"-?\d{1,18}", value) else value


def decimal(text: str | None) -> Any:
    value = (text or "").strip()
    try:
        return float(value)
    except ValueError:
        return value


def field_errors(exc: ServiceError, paths: Mapping[str, str], words: Mapping[str, str] = {}) -> dict[str, list[str]]:
    """Split an API error over the form's fields.

    ``paths`` maps a member path of the model's messages (``resourceConfig.instanceCount``) to a field
    (the longest matching prefix wins); ``words`` maps a word of a provider's own message to a field.
    """
    errors: dict[str, list[str]] = {}
    violations = list(_VIOLATION.finditer(exc.message))
    for m in violations:
        path = m.group(1)
        field = next(
            (paths[p] for p in sorted(paths, key=len, reverse=True) if path == p or path.startswith(p + ".")), FORM
        )
        errors.setdefault(field, []).append(m.group(0))
    if not violations:
        field = next((f for word, f in words.items() if word in exc.message), FORM)
        errors.setdefault(field, []).append(exc.message)
    return errors


def required(form: Mapping[str, str], labels: Mapping[str, str]) -> dict[str, list[str]]:
    """The message "<label> is required." for each field of ``labels`` (field -> label) left empty in ``form``.

    Shown instead of the API's messages for the empty value (a length or pattern it fails), which
    describe a value nobody typed.
    """
    return {f: [f"{label} is required."] for f, label in labels.items() if not form.get(f, "").strip()}


TRAINING_PATHS = {
    "trainingJobName": "name",
    "resourceConfig.instanceType": "instance_type",
    "resourceConfig.instanceCount": "instance_count",
    "stoppingCondition.maxRuntimeInSeconds": "max_runtime",
    "outputDataConfig.s3OutputPath": "output_path",
    "inputDataConfig.1.member": "train",
    "inputDataConfig.2.member": "validation",
    "hyperParameters": "hyperparameters",
    "roleArn": "role",
}
TRAINING_REQUIRED = {
    "name": "Job name",
    "train": "Training data",
    "output_path": "Output path",
    "instance_count": "Instance count",
    "max_runtime": "Maximum runtime",
    "role": "Execution role",
}
TRAINING_WORDS = {"S3OutputPath": "output_path", "Channel": "train", "role": "role", "training job": "name"}


def _channel(name: str, uri: str, content_type: str) -> dict[str, Any]:
    return {
        "ChannelName": name,
        "DataSource": {
            "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uri, "S3DataDistributionType": "FullyReplicated"}
        },
        "ContentType": content_type,
    }


def training_request(form: Mapping[str, str], algorithm: Algorithm, region: str) -> dict[str, Any]:
    """CreateTrainingJob's request for the create form."""
    content_type = form.get("content_type") or algorithm.content_types[0]
    channels = [_channel("train", form.get("train", "").strip(), content_type)]
    if form.get("validation", "").strip():
        channels.append(_channel("validation", form["validation"].strip(), content_type))
    hyperparameters = {
        h.name: form.get(f"hp_{h.name}", "").strip()
        for h in algorithm.hyperparameters
        if form.get(f"hp_{h.name}", "").strip()
    }
    return {
        "TrainingJobName": form.get("name", "").strip(),
        "AlgorithmSpecification": {"TrainingImage": algorithm.image(region), "TrainingInputMode": "File"},
        "RoleArn": form.get("role", "").strip(),
        "InputDataConfig": channels,
        "OutputDataConfig": {"S3OutputPath": form.get("output_path", "").strip()},
        "ResourceConfig": {
            "InstanceType": form.get("instance_type", ""),
            "InstanceCount": number(form.get("instance_count")),
            "VolumeSizeInGB": 30,
        },
        "StoppingCondition": {"MaxRuntimeInSeconds": number(form.get("max_runtime"))},
        "HyperParameters": hyperparameters,
    }


DEPLOY_REQUIRED = {"endpoint_name": "Endpoint name", "instance_count": "Instance count"}
DEPLOY_PATHS = {
    "modelName": "endpoint_name",
    "endpointConfigName": "endpoint_name",
    "endpointName": "endpoint_name",
    "productionVariants.1.member.instanceType": "instance_type",
    "productionVariants.1.member.initialInstanceCount": "instance_count",
}


def deploy_requests(
    name: str, image: str, artifact: str, role: str, instance_type: str, count: str
) -> list[tuple[str, dict[str, Any]]]:
    """CreateModel, CreateEndpointConfig and CreateEndpoint for one job's model, all named ``name``."""
    return [
        (
            "CreateModel",
            {
                "ModelName": name,
                "PrimaryContainer": {"Image": image, "ModelDataUrl": artifact},
                "ExecutionRoleArn": role,
            },
        ),
        (
            "CreateEndpointConfig",
            {
                "EndpointConfigName": name,
                "ProductionVariants": [
                    {
                        "VariantName": "AllTraffic",
                        "ModelName": name,
                        "InitialInstanceCount": number(count),
                        "InstanceType": instance_type,
                        "InitialVariantWeight": 1.0,
                    }
                ],
            },
        ),
        ("CreateEndpoint", {"EndpointName": name, "EndpointConfigName": name}),
    ]


def weights_request(endpoint: str, variants: list[str], form: Mapping[str, str]) -> dict[str, Any]:
    desired = []
    for v in variants:
        item: dict[str, Any] = {"VariantName": v, "DesiredWeight": decimal(form.get(f"weight_{v}"))}
        if form.get(f"count_{v}", "").strip():
            item["DesiredInstanceCount"] = number(form.get(f"count_{v}"))
        desired.append(item)
    return {"EndpointName": endpoint, "DesiredWeightsAndCapacities": desired}
