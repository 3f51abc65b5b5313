"""A monitoring job definition (inline or a DataQualityJobDefinition) and the processing job of one execution.

The processing job runs the definition's image with the analyzer's environment (``dataset_format``
``sagemakerCaptureJson``, ``dataset_source``, ``output_path``, ``start_time``/``end_time``,
``baseline_constraints``/``baseline_statistics``, ``sagemaker_endpoint_name``,
``sagemaker_monitoring_schedule_name``, ``publish_cloudwatch_metrics``). Its inputs are the captured
hours of the endpoint (``<DestinationS3Uri>/<endpoint>/<variant>/yyyy/mm/dd/hh``) that meet the
window, each at ``<EndpointInput.LocalPath>/<endpoint>/<variant>/yyyy/mm/dd/hh``, and the baseline's
two files; its output goes to ``<S3Uri>/<endpoint>/<schedule>/yyyy/mm/dd/hh``.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from opensage.monitor import CONSTRAINTS_FILE, STATISTICS_FILE
from opensage.objects.transfer import split_s3_uri
from opensage.serving.endpoints import CONFIG, ENDPOINT
from opensage.store.sql import SqlStore

DEFINITION = "data-quality-job-definition"
STATUS_FIELD = {"monitoring-schedule": "MonitoringScheduleStatus", "monitoring-execution": "MonitoringExecutionStatus"}
BASELINE_DIR = "/opt/ml/processing/baseline"
CAPTURE_FORMAT = {"sagemakerCaptureJson": {"captureIndexNames": ["endpointInput", "endpointOutput"]}}


class NoData(Exception):
    """The window holds no captured data; the message says which prefix and window."""


class DefinitionError(ValueError):
    """The definition cannot run; the message says what to fix."""


def from_data_quality(definition: dict[str, Any]) -> dict[str, Any]:
    """A DataQualityJobDefinition in the shape of an inline MonitoringJobDefinition."""
    app = dict(definition.get("DataQualityAppSpecification") or {})
    environment = app.pop("Environment", None) or {}
    inputs = definition.get("DataQualityJobInput") or {}
    return {
        "BaselineConfig": definition.get("DataQualityBaselineConfig") or {},
        "MonitoringInputs": [{k: v} for k, v in inputs.items() if k in ("EndpointInput", "BatchTransformInput")],
        "MonitoringOutputConfig": definition.get("DataQualityJobOutputConfig") or {},
        "MonitoringResources": definition.get("JobResources") or {},
        "MonitoringAppSpecification": app,
        "StoppingCondition": definition.get("StoppingCondition") or {},
        "Environment": environment,
        "NetworkConfig": definition.get("NetworkConfig") or {},
        "RoleArn": definition.get("RoleArn"),
    }


def definition_of(store: SqlStore, schedule: dict[str, Any]) -> dict[str, Any]:
    """The inline definition a schedule runs (its named job definition's, as it was at creation if deleted)."""
    config = schedule.get("MonitoringScheduleConfig") or {}
    if config.get("MonitoringJobDefinition"):
        return dict(config["MonitoringJobDefinition"])
    name = config.get("MonitoringJobDefinitionName")
    row = store.get_resource(DEFINITION, name) if name else None
    data = row.data if row is not None else schedule.get("_JobDefinition") or {}
    return from_data_quality(data)


def endpoint_input(definition: dict[str, Any]) -> dict[str, Any]:
    for item in definition.get("MonitoringInputs") or []:
        if "EndpointInput" in item:
            return dict(item["EndpointInput"])
    raise DefinitionError(
        "The monitoring job definition has no EndpointInput; OpenSage monitors endpoints' captured data "
        "(BatchTransformInput is not available)."
    )


def endpoint_name(definition: dict[str, Any]) -> str:
    return str(endpoint_input(definition)["EndpointName"])


def capture_destination(store: SqlStore, endpoint: str) -> str:
    """The DestinationS3Uri of the endpoint's data capture.

    Raises:
        DefinitionError: no such endpoint, or it captures no data.
    """
    row = store.get_resource(ENDPOINT, endpoint)
    if row is None:
        raise DefinitionError(f"Endpoint {endpoint} does not exist; create it (with a DataCaptureConfig) first.")
    config = store.get_resource(CONFIG, str(row.data.get("EndpointConfigName")))
    capture = (config.data.get("DataCaptureConfig") if config else None) or {}
    if not capture.get("EnableCapture", bool(capture)) or not capture.get("DestinationS3Uri"):
        raise DefinitionError(
            f"Endpoint {endpoint} does not capture data; give its endpoint config a DataCaptureConfig "
            "(EnableCapture true, DestinationS3Uri) so that it can be monitored."
        )
    return str(capture["DestinationS3Uri"]).rstrip("/")


def baseline_uris(store: SqlStore, baseline: dict[str, Any]) -> tuple[str | None, str | None]:
    """(constraints, statistics) S3 URIs of a BaselineConfig (from its baselining job when it names one)."""
    constraints = (baseline.get("ConstraintsResource") or {}).get("S3Uri")
    statistics = (baseline.get("StatisticsResource") or {}).get("S3Uri")
    job_name = baseline.get("BaseliningJobName")
    if job_name and not (constraints and statistics):
        job = store.get_resource("processing-job", job_name)
        outputs = ((job.data.get("ProcessingOutputConfig") or {}).get("Outputs") or []) if job else []
        if outputs:
            base = outputs[0]["S3Output"]["S3Uri"].rstrip("/")
            constraints = constraints or f"{base}/{CONSTRAINTS_FILE}"
            statistics = statistics or f"{base}/{STATISTICS_FILE}"
    return constraints, statistics


def baseline_statistics_uri(store: SqlStore, schedule_name: str) -> str | None:
    row = store.get_resource("monitoring-schedule", schedule_name)
    if row is None:
        return None
    return baseline_uris(store, definition_of(store, row.data).get("BaselineConfig") or {})[1]


def resolve(store: SqlStore, schedule: dict[str, Any]) -> dict[str, Any]:
    """The schedule's definition with its capture destination and baseline files found.

    Raises:
        DefinitionError: the endpoint is gone or captures nothing, or no EndpointInput.
    """
    definition = definition_of(store, schedule)
    definition["_CaptureDestination"] = capture_destination(store, endpoint_name(definition))
    definition["_Baseline"] = baseline_uris(store, definition.get("BaselineConfig") or {})
    return definition


def _hours(start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
    hour = start.replace(minute=0, second=0, microsecond=0)
    found = []
    while hour < end:
        found.append(hour)
        hour += dt.timedelta(hours=1)
    return found


def _captured_prefixes(s3: Any, destination: str, endpoint: str, window: tuple[dt.datetime, dt.datetime]) -> list[str]:
    bucket, prefix = split_s3_uri(destination)
    root = "/".join(p for p in (prefix.strip("/"), endpoint) if p) + "/"
    listing = s3.list_objects_v2(Bucket=bucket, Prefix=root, Delimiter="/")
    variants = [p["Prefix"] for p in listing.get("CommonPrefixes") or []]
    found = []
    for variant in variants:
        for hour in _hours(*window):
            key = f"{variant}{hour:%Y/%m/%d/%H}/"
            if s3.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1).get("KeyCount", 0):
                found.append(f"s3://{bucket}/{key}")
    return found


def processing_request(
    s3: Any,
    definition: dict[str, Any],
    schedule: str,
    scheduled: dt.datetime,
    window: tuple[dt.datetime, dt.datetime],
    job_name: str,
) -> dict[str, Any]:
    """The CreateProcessingJob request of one execution.

    Raises:
        NoData: no captured hour meets the window. DefinitionError: the definition cannot run.
    """
    source = endpoint_input(definition)
    endpoint = str(source["EndpointName"])
    capture = str(definition["_CaptureDestination"])
    start, end = (f"{t:%Y-%m-%dT%H:%M:%SZ}" for t in window)
    prefixes = _captured_prefixes(s3, capture, endpoint, window)
    if not prefixes:
        raise NoData(
            f"Job inputs had no data: no captured records under {capture}/{endpoint}/ for the window {start} to {end} "
            "(DataAnalysisStartTime/EndTime or the hour before the scheduled time); send traffic to the endpoint "
            "in that window or widen it."
        )
    local = str(source.get("LocalPath") or "/opt/ml/processing/input/endpoint").rstrip("/")
    root = capture.rstrip("/") + "/"
    inputs = [
        {
            "InputName": f"endpoint-input-{i + 1}",
            "S3Input": {
                "S3Uri": uri,
                "LocalPath": f"{local}/{uri[len(root) :].rstrip('/')}",
                "S3DataType": "S3Prefix",
                "S3InputMode": "File",
                "S3DataDistributionType": "FullyReplicated",
            },
        }
        for i, uri in enumerate(prefixes)
    ]
    env = dict(definition.get("Environment") or {})
    constraints, statistics = definition.get("_Baseline") or (None, None)
    for name, uri, folder, file in (
        ("baseline_constraints", constraints, "constraints", CONSTRAINTS_FILE),
        ("baseline_statistics", statistics, "stats", STATISTICS_FILE),
    ):
        if uri:
            inputs.append(
                {
                    "InputName": name,
                    "S3Input": {
                        "S3Uri": uri,
                        "LocalPath": f"{BASELINE_DIR}/{folder}",
                        "S3DataType": "S3Prefix",
                        "S3InputMode": "File",
                        "S3DataDistributionType": "FullyReplicated",
                    },
                }
            )
            env[name] = f"{BASELINE_DIR}/{folder}/{uri.rsplit('/', 1)[-1] or file}"
    outputs = (definition.get("MonitoringOutputConfig") or {}).get("MonitoringOutputs") or []
    if not outputs:
        raise DefinitionError("The monitoring job definition has no MonitoringOutputs.")
    s3_output = dict(outputs[0]["S3Output"])
    s3_output["S3Uri"] = f"{s3_output['S3Uri'].rstrip('/')}/{endpoint}/{schedule}/{scheduled:%Y/%m/%d/%H}"
    env.update(
        {
            "dataset_format": json.dumps(CAPTURE_FORMAT),
            "dataset_source": local,
            "output_path": s3_output["LocalPath"],
            "start_time": start,
            "end_time": end,
            "sagemaker_endpoint_name": endpoint,
            "sagemaker_monitoring_schedule_name": schedule,
        }
    )
    env.setdefault("publish_cloudwatch_metrics", "Enabled")
    app = definition.get("MonitoringAppSpecification") or {}
    app_spec = {"ImageUri": app["ImageUri"]}
    for key in ("ContainerEntrypoint", "ContainerArguments"):
        if app.get(key):
            app_spec[key] = app[key]
    request: dict[str, Any] = {
        "ProcessingJobName": job_name,
        "ProcessingResources": definition.get("MonitoringResources") or {},
        "AppSpecification": app_spec,
        "Environment": env,
        "ProcessingInputs": inputs,
        "ProcessingOutputConfig": {
            "Outputs": [
                {
                    "OutputName": "monitoring_output",
                    "S3Output": {**s3_output, "S3UploadMode": s3_output.get("S3UploadMode", "EndOfJob")},
                }
            ]
        },
        "RoleArn": definition.get("RoleArn"),
        "StoppingCondition": definition.get("StoppingCondition") or {"MaxRuntimeInSeconds": 3600},
    }
    if definition.get("NetworkConfig"):
        request["NetworkConfig"] = definition["NetworkConfig"]
    return request
