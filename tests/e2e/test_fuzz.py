"""Malformed requests, generated from botocore's service models, never get a 5xx from a running platform.

Every served operation gets ``OPENSAGE_FUZZ_EXAMPLES`` (5 by default) requests drawn by hypothesis with a
fixed seed from its input shape: values of the right type or not, within the model's limits or not, plus
names that reach the engines (an execution role, an image, S3 URIs). The shapes' own checks stay off in
the client (``parameter_validation=False``) so the server sees what a careless or hostile caller sends. A
job or endpoint that a request happens to start is stopped and deleted at once, so the run stays small.
The cases after the fuzzer are ones it found once, sent as raw bytes where botocore would not send them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from botocore.model import Shape
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import RunningPlatform, running_platform

pytestmark = pytest.mark.slow
EXAMPLES = int(os.environ.get("OPENSAGE_FUZZ_EXAMPLES", "5"))
IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
ROLE = "arn:aws:iam::{account}:role/OpenSageExecutionRole"
BUCKET = "fuzz"
# Values that get past validation into the engines (or are a classic trap), mixed with random text.
WORDS = ["fuzz", "fuzz-1", "a", "..", "../x", "/etc/passwd", "\x00", "<script>", "ml.m5.large", "text/csv", IMAGE]
WORDS += [f"s3://{BUCKET}/data/", f"s3://{BUCKET}/../x", "s3://", "arn:aws:sagemaker:us-east-1:000000000000:x/y"]
# Work a request may start, and how to end it: operation -> (name member, stop, delete).
WORK = {
    "CreateTrainingJob": ("TrainingJobName", "stop_training_job", None),
    "CreateProcessingJob": ("ProcessingJobName", "stop_processing_job", None),
    "CreateTransformJob": ("TransformJobName", "stop_transform_job", None),
    "CreateHyperParameterTuningJob": ("HyperParameterTuningJobName", "stop_hyper_parameter_tuning_job", None),
    "CreateEndpoint": ("EndpointName", None, "delete_endpoint"),
    "UpdateEndpoint": ("EndpointName", None, "delete_endpoint"),
}
SERVICES = ("sagemaker", "sagemaker-runtime", "sts", "iam", "logs", "kms", "cloudwatch", "scheduler")


def _served() -> list[tuple[str, str]]:
    from opensage.app import PROVIDER_CLASSES
    from opensage.aws.dispatch import coverage
    from opensage.aws.specs import load_specs

    return [
        (c.service, op) for c in coverage(load_specs(), PROVIDER_CLASSES) if c.service in SERVICES for op in c.served
    ]


def _text(shape: Shape) -> st.SearchStrategy[str]:
    meta = shape.metadata
    options: list[st.SearchStrategy[str]] = [st.sampled_from(WORDS), st.text(max_size=min(meta.get("max", 40), 80))]
    if shape.enum:
        options.append(st.sampled_from(shape.enum))
    pattern = meta.get("pattern")
    if pattern and "\\p" not in pattern:
        try:
            re.compile(pattern)
            options.append(st.from_regex(pattern, fullmatch=True).filter(lambda s: len(s) <= meta.get("max", 2048)))
        except re.error:
            pass
    return st.one_of(options)


def _number(shape: Shape, floats: bool) -> st.SearchStrategy[Any]:
    lo, hi = shape.metadata.get("min"), shape.metadata.get("max")
    inside = (
        st.floats(lo, hi, allow_nan=False, allow_infinity=False)
        if floats
        else st.integers(int(lo) if lo is not None else -(2**31), int(hi) if hi is not None else 2**31)
    )
    return st.one_of(inside, st.integers(-(2**63), 2**63), st.sampled_from([0, -1, 1]))


def strategy(shape: Shape, depth: int = 0) -> st.SearchStrategy[Any]:
    """Values for ``shape``: mostly its type, sometimes another (the server must say so, not fail)."""
    kind = shape.type_name
    if kind == "structure":
        if depth > 5:  # recursive shapes (SearchExpression): stop growing
            return st.just({})
        members = {n: strategy(m, depth + 1) for n, m in shape.members.items()}
        required = {n: s for n, s in members.items() if n in shape.required_members}
        optional = {n: s for n, s in members.items() if n not in required}
        return st.fixed_dictionaries(required, optional=optional)
    if kind == "list":
        return st.lists(strategy(shape.member, depth + 1), max_size=3)
    if kind == "map":
        return st.dictionaries(_text(shape.key), strategy(shape.value, depth + 1), max_size=3)
    if kind == "string":
        return _text(shape) | st.integers(-5, 5) if depth else _text(shape)
    if kind in ("integer", "long"):
        return _number(shape, floats=False)
    if kind in ("float", "double"):
        return _number(shape, floats=True)
    if kind == "boolean":
        return st.booleans()
    if kind == "timestamp":
        return st.datetimes(timezones=st.just(dt.UTC))
    if kind == "blob":
        return st.binary(max_size=64)
    return st.none()


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    root = tmp_path_factory.mktemp("fuzz")
    with running_platform(root / "home", root / "aws") as running:
        running.session().client("s3").create_bucket(Bucket=BUCKET)
        account = running.session().client("sts").get_caller_identity()["Account"]
        WORDS.append(ROLE.format(account=account))
        yield running
        WORDS.remove(ROLE.format(account=account))


@pytest.fixture(scope="module")
def clients(platform: RunningPlatform) -> dict[str, Client]:
    return {}


class Client:
    """A botocore client per service that checks nothing itself and remembers each answer's status."""

    def __init__(self, platform: RunningPlatform, service: str) -> None:
        config = Config(parameter_validation=False, retries={"max_attempts": 1}, read_timeout=30)
        self.client = platform.session().client(service, endpoint_url=platform.api_url, config=config)
        self.statuses: list[tuple[int, bytes]] = []
        self.client.meta.events.register("before-parse", self._seen)

    def _seen(self, response_dict: dict[str, Any], **_: Any) -> None:
        self.statuses.append((response_dict["status_code"], response_dict.get("body") or b""))

    def call(self, operation: str, params: dict[str, Any]) -> dict[str, Any] | None:
        from botocore import xform_name

        self.statuses.clear()
        try:
            return getattr(self.client, xform_name(operation))(**params)
        except ClientError:
            return None
        except (BotoCoreError, ValueError, TypeError, UnicodeError):  # the client itself could not send it
            return None
        finally:
            for status, body in self.statuses:
                assert status < 500, f"{operation} {params!r} answered {status}: {body[:500]!r}"


def _end_work(sm: Any, operation: str, params: dict[str, Any]) -> None:
    member, stop, delete = WORK[operation]
    for method in (stop, delete):
        if method is not None:
            with contextlib.suppress(ClientError):
                getattr(sm, method)(**{member: params[member]})


@pytest.mark.parametrize(("service", "operation"), _served(), ids=lambda v: v)
def test_no_request_gets_a_5xx(
    platform: RunningPlatform, clients: dict[str, Client], service: str, operation: str
) -> None:
    client = clients.get(service) or clients.setdefault(service, Client(platform, service))
    shape = client.client.meta.service_model.operation_model(operation).input_shape
    inputs = strategy(shape) if shape is not None else st.just({})

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(inputs)
    def run(params: dict[str, Any]) -> None:
        answer = client.call(operation, params)
        if answer is not None and operation in WORK:
            _end_work(client.client, operation, params)

    run()


# --- the cases it found -----------------------------------------------------------------------


def _raw(platform: RunningPlatform, target: str, body: bytes, service: str = "sagemaker") -> httpx.Response:
    """A signed JSON 1.1 request with ``body`` as is."""
    credentials = platform.session().get_credentials()
    request = AWSRequest(
        "POST",
        platform.api_url + "/",
        data=body,
        headers={"X-Amz-Target": target, "Content-Type": "application/x-amz-json-1.1"},
    )
    SigV4Auth(credentials, service, "us-east-1").add_auth(request)
    return httpx.post(platform.api_url + "/", content=body, headers=dict(request.headers.items()), timeout=30)


def _code(response: httpx.Response) -> str:
    return str(response.json().get("__type", "")).rsplit("#", 1)[-1]


@pytest.mark.parametrize("depth", [200, 900, 100_000])
def test_deeply_nested_json_is_a_client_error(platform: RunningPlatform, depth: int) -> None:
    nested = b'{"SubExpressions": [' * depth + b'{"Operator": "And"}' + b"]}" * depth
    body = b'{"Resource": "TrainingJob", "SearchExpression": ' + nested + b"}"
    r = _raw(platform, "SageMaker.Search", body)
    assert 400 <= r.status_code < 500, r.text
    assert _code(r) in ("SerializationException", "ValidationException", "UnknownOperationException"), r.text


@pytest.mark.parametrize("value", ["1e300", "-1e300", "99999999999999999999", '"10000-01-01T00:00:00Z"', "1e20"])
def test_an_out_of_range_timestamp_is_a_validation_error(platform: RunningPlatform, value: str) -> None:
    r = _raw(platform, "SageMaker.ListTrainingJobs", b'{"CreationTimeAfter": ' + value.encode() + b"}")
    assert r.status_code == 400 and _code(r) == "ValidationException", r.text
    assert "creationTimeAfter" in r.text


def _training(platform: RunningPlatform, **overrides: Any) -> dict[str, Any]:
    account = platform.session().client("sts").get_caller_identity()["Account"]
    params: dict[str, Any] = {
        "TrainingJobName": f"fuzz-{time.monotonic_ns() % 10**9}",
        "AlgorithmSpecification": {"TrainingImage": IMAGE, "TrainingInputMode": "File"},
        "RoleArn": ROLE.format(account=account),
        "OutputDataConfig": {"S3OutputPath": f"s3://{BUCKET}/output"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 5},
        "StoppingCondition": {"MaxRuntimeInSeconds": 60},
    }
    params.update(overrides)
    return {k: v for k, v in params.items() if v is not None}


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"AlgorithmSpecification": None}, "AlgorithmSpecification"),
        (
            {"ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 0, "VolumeSizeInGB": 5}},
            "InstanceCount",
        ),
        ({"HyperParameters": {"num_round": "2\x00"}}, "num_round"),
        ({"Environment": {"A": "1\x00"}}, "Environment"),
    ],
    ids=["no-algorithm", "instance-count-0", "nul-hyperparameter", "nul-environment"],
)
def test_a_training_job_that_cannot_run_is_refused_at_creation(
    platform: RunningPlatform, overrides: dict[str, Any], words: str
) -> None:
    sm = Client(platform, "sagemaker").client
    params = _training(platform, **overrides)
    with pytest.raises(ClientError) as exc:
        sm.create_training_job(**params)
    error = exc.value.response["Error"]
    assert error["Code"] == "ValidationException" and words in error["Message"], error
    with pytest.raises(ClientError):
        sm.describe_training_job(TrainingJobName=params["TrainingJobName"])
