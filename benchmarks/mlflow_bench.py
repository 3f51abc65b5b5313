"""Tracking servers benchmark: how long a tracking server takes to come up and what one costs at rest.

Against a real ``opensage up`` (its own home and ports), as a boto3 client sees it:

* CreateMlflowTrackingServer -> ``Created`` (a new backend store: MLflow creates its schema);
* StopMlflowTrackingServer -> ``Stopped``, then StartMlflowTrackingServer -> ``Started`` (the store exists);
* the resident memory (RSS, with its children) of one idle ``mlflow server`` process, a few seconds after it answers;
* one signed MLflow REST call through the platform (``experiments/search``), p50 over a few calls.

Usage: python benchmarks/mlflow_bench.py [--reps 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psutil
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from helpers import RunningPlatform, running_platform  # noqa: E402

BUCKET = "mlflow-bench"


def wait(sm: Any, name: str, status: str, timeout: float = 300) -> float:
    start = time.perf_counter()
    while True:
        got = sm.describe_mlflow_tracking_server(TrackingServerName=name)["TrackingServerStatus"]
        if got == status:
            return time.perf_counter() - start
        if got.endswith("Failed") or time.perf_counter() - start > timeout:
            raise RuntimeError(f"{name} is {got}, waiting for {status}")
        time.sleep(0.05)


def rss_mb(pid: int) -> float:
    proc = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2**20


def signed_call_ms(platform: RunningPlatform, arn: str, n: int = 20) -> float:
    url = platform.api_url + "/_opensage/mlflow/api/2.0/mlflow/experiments/search"
    creds = platform.session().get_credentials()
    body = json.dumps({"max_results": 10}).encode()
    times = []
    with httpx.Client() as client:
        for _ in range(n):
            request = AWSRequest(
                "POST",
                url,
                data=body,
                headers={"Content-Type": "application/json", "x-mlflow-sm-tracking-server-arn": arn},
            )
            SigV4Auth(creds, "sagemaker-mlflow", "us-east-1").add_auth(request)
            start = time.perf_counter()
            response = client.post(url, content=body, headers=dict(request.headers.items()))
            times.append((time.perf_counter() - start) * 1000)
            response.raise_for_status()
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    rows: dict[str, list[float]] = {"create -> Created (s)": [], "stop -> Stopped (s)": [], "start -> Started (s)": []}
    rows |= {"idle RSS of one server (MB)": [], "signed experiments/search via the platform, p50 (ms)": []}
    with tempfile.TemporaryDirectory() as tmp, running_platform(Path(tmp) / "home", Path(tmp) / "aws") as platform:
        session = platform.session()
        session.client("s3").create_bucket(Bucket=BUCKET)
        sm = session.client("sagemaker")
        role = f"arn:aws:iam::{session.client('sts').get_caller_identity()['Account']}:role/OpenSageExecutionRole"
        for _ in range(args.reps):
            name = f"bench-{uuid.uuid4().hex[:8]}"
            start = time.perf_counter()
            arn = sm.create_mlflow_tracking_server(
                TrackingServerName=name, ArtifactStoreUri=f"s3://{BUCKET}/{name}", RoleArn=role
            )["TrackingServerArn"]
            wait(sm, name, "Created")
            rows["create -> Created (s)"].append(time.perf_counter() - start)
            time.sleep(3)  # idle
            pid = int((platform.home / "mlflow" / name / "server.pid").read_text())
            rows["idle RSS of one server (MB)"].append(rss_mb(pid))
            rows["signed experiments/search via the platform, p50 (ms)"].append(signed_call_ms(platform, arn))
            start = time.perf_counter()
            sm.stop_mlflow_tracking_server(TrackingServerName=name)
            wait(sm, name, "Stopped")
            rows["stop -> Stopped (s)"].append(time.perf_counter() - start)
            start = time.perf_counter()
            sm.start_mlflow_tracking_server(TrackingServerName=name)
            wait(sm, name, "Started")
            rows["start -> Started (s)"].append(time.perf_counter() - start)
            sm.delete_mlflow_tracking_server(TrackingServerName=name)
    print(f"| measure (n={args.reps}) | median | min | max |")
    print("|---|---|---|---|")
    for label, values in rows.items():
        print(f"| {label} | {statistics.median(values):.2f} | {min(values):.2f} | {max(values):.2f} |")


if __name__ == "__main__":
    main()
