"""Model registry and EventBridge benchmark: registry calls as a group grows, and how long an approval
takes to reach a rule's target.

An in-process API server (no object store: nothing here reads S3) with ``--versions`` versions in one
group and as many in other groups. Measured with boto3, over real HTTP:

* CreateModelPackage (a new version: a compare-and-set on the group, one row);
* ListModelPackages for the latest approved version (the SDK's
  ``get_most_recently_created_approved_model_package``), and a whole group's listing;
* Search over ModelPackage (group and approval filters; it reads every package's record);
* approval -> event: UpdateModelPackage returns -> the matching rule's log-group target holds the
  event, with ``--rules`` other enabled rules that do not match;
* approval -> pipeline: UpdateModelPackage returns -> the pipeline target's execution is listed.

Usage: python benchmarks/registry_bench.py [--versions 500] [--rules 50] [--reps 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))
IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
SPEC = {"Containers": [{"Image": IMAGE, "ModelDataUrl": "s3://bench/model.tar.gz"}]}
POLL_S = 0.002


def _times(fn: Callable[[], Any], reps: int) -> list[float]:
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def _until(check: Callable[[], bool], timeout: float = 10) -> float:
    t = time.perf_counter()
    while not check():
        if time.perf_counter() - t > timeout:
            raise TimeoutError("the target never saw the event")
        time.sleep(POLL_S)
    return (time.perf_counter() - t) * 1000


def _row(label: str, values: list[float]) -> str:
    p95 = sorted(values)[max(0, int(len(values) * 0.95) - 1)]
    return f"| {label} | {len(values)} | {statistics.median(values):.1f} | {p95:.1f} | {max(values):.1f} |"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--versions", type=int, default=500)
    ap.add_argument("--rules", type=int, default=50)
    ap.add_argument("--reps", type=int, default=20)
    args = ap.parse_args()

    from helpers import api_server

    with tempfile.TemporaryDirectory() as tmp, api_server(Path(tmp) / "home") as api:
        sm, events, logs = api.client("sagemaker"), api.client("events"), api.client("logs")
        account = api.platform.identity.account_id
        role = f"arn:aws:iam::{account}:role/OpenSageExecutionRole"
        group = f"bench-{uuid.uuid4().hex[:6]}"
        for g in (group, group + "-other"):
            sm.create_model_package_group(ModelPackageGroupName=g)
        rows: list[str] = []
        create = []
        arns = []
        for i in range(args.versions):
            t = time.perf_counter()
            arns.append(
                sm.create_model_package(ModelPackageGroupName=group, InferenceSpecification=SPEC)["ModelPackageArn"]
            )
            create.append((time.perf_counter() - t) * 1000)
            sm.create_model_package(ModelPackageGroupName=group + "-other", InferenceSpecification=SPEC)
            if i % 10 == 0:
                sm.update_model_package(ModelPackageArn=arns[-1], ModelApprovalStatus="Approved")
        rows.append(_row(f"CreateModelPackage (to {args.versions} versions)", create))
        latest = {"ModelPackageGroupName": group, "ModelApprovalStatus": "Approved", "SortBy": "CreationTime",
                  "SortOrder": "Descending", "MaxResults": 1}  # fmt: skip
        rows.append(
            _row("ListModelPackages, latest approved", _times(lambda: sm.list_model_packages(**latest), args.reps))
        )
        pages = sm.get_paginator("list_model_packages")
        whole = _times(
            lambda: [p for p in pages.paginate(ModelPackageGroupName=group, PaginationConfig={"PageSize": 100})], 3
        )
        rows.append(_row(f"ListModelPackages, all {args.versions} (pages of 100)", whole))
        filters = [{"Name": "ModelPackageGroupName", "Operator": "Equals", "Value": group},
                   {"Name": "ModelApprovalStatus", "Operator": "Equals", "Value": "Approved"}]  # fmt: skip
        expression = {"Filters": filters}
        search = _times(lambda: sm.search(Resource="ModelPackage", SearchExpression=expression), max(3, args.reps // 4))
        rows.append(_row(f"Search ModelPackage ({2 * args.versions} packages)", search))

        for i in range(args.rules):
            events.put_rule(Name=f"other-{i}", EventPattern=json.dumps({"source": ["aws.sagemaker"],
                            "detail": {"ModelPackageGroupName": [f"nothing-{i}"]}}))  # fmt: skip
        log_group = f"/aws/events/{group}"
        pattern = {"source": ["aws.sagemaker"], "detail-type": ["SageMaker Model Package State Change"],
                   "detail": {"ModelPackageGroupName": [group], "ModelApprovalStatus": ["Rejected"]}}  # fmt: skip
        events.put_rule(Name="to-log", EventPattern=json.dumps(pattern))
        events.put_targets(
            Rule="to-log", Targets=[{"Id": "log", "Arn": f"arn:aws:logs:us-east-1:{account}:log-group:{log_group}"}]
        )

        def logged() -> int:
            try:
                return len(logs.get_log_events(logGroupName=log_group, logStreamName="to-log")["events"])
            except logs.exceptions.ResourceNotFoundException:
                return 0

        to_log = []
        for i in range(args.reps):
            before = logged()
            sm.update_model_package(ModelPackageArn=arns[i * 3 + 1], ModelApprovalStatus="Rejected")
            to_log.append(_until(lambda b=before: logged() > b))  # type: ignore[misc]
        rows.append(_row(f"approval -> log-group target ({args.rules} other rules)", to_log))

        definition = {"Version": "2020-12-01", "Parameters": [{"Name": "Arn", "Type": "String", "DefaultValue": "x"}],
                      "Steps": [{"Name": "Stop", "Type": "Fail", "Arguments": {"ErrorMessage": "bench"}}]}  # fmt: skip
        pipeline = sm.create_pipeline(
            PipelineName=f"{group}-deploy", RoleArn=role, PipelineDefinition=json.dumps(definition)
        )
        pattern["detail"]["ModelApprovalStatus"] = ["Approved"]
        events.put_rule(Name="to-pipeline", EventPattern=json.dumps(pattern))
        params = {"PipelineParameterList": [{"Name": "Arn", "Value": "$.detail.ModelPackageArn"}]}
        events.put_targets(Rule="to-pipeline", Targets=[{"Id": "p", "Arn": pipeline["PipelineArn"], "RoleArn": role,
                                                         "SageMakerPipelineParameters": params}])  # fmt: skip

        def started() -> int:
            return len(
                sm.list_pipeline_executions(PipelineName=f"{group}-deploy", MaxResults=100)[
                    "PipelineExecutionSummaries"
                ]
            )

        to_pipeline = []
        for i in range(min(args.reps, 20)):
            before = started()
            sm.update_model_package(ModelPackageArn=arns[i * 3 + 2], ModelApprovalStatus="Approved")
            to_pipeline.append(_until(lambda b=before: started() > b))  # type: ignore[misc]
        rows.append(_row("approval -> pipeline execution started", to_pipeline))

    print("| operation | n | p50 ms | p95 ms | max ms |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
