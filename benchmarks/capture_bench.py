"""Data capture benchmark: an endpoint's throughput with DataCaptureConfig on (100 %) against off.

One platform (``opensage up`` on a temporary home), one XGBoost model (--trees trees over 20
features, trained here), served twice on ml.m5.large, one instance each: ``off`` without data
capture, ``on`` with EnableCapture, InitialSamplingPercentage 100 and both Input and Output captured.
A SigV4-signed InvokeEndpoint (a 1-row CSV body) is replayed by wrk at each --concurrency for
--duration seconds, the two endpoints taking turns for --reps rounds so that drift on a shared
machine hits both alike; the table has each one's median requests/s, p50 and p99 over the rounds
and the ratio on/off (the goal: at least 0.9). The captured records under the destination are
counted afterwards: every request the ``on`` endpoint answered must be there.

Usage: python benchmarks/capture_bench.py [--reps 3] [--duration 5] [--concurrency 1 8] [--trees 100]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from multi_model_bench import IMAGE, _artifact  # noqa: E402

BUCKET = "capture-bench"
GOAL = 0.9


def _deploy(sm: Any, name: str, role: str, capture: dict | None) -> None:
    sm.create_model(
        ModelName=name,
        PrimaryContainer={"Image": IMAGE, "ModelDataUrl": f"s3://{BUCKET}/model.tar.gz"},
        ExecutionRoleArn=role,
    )
    variant = {"VariantName": "AllTraffic", "ModelName": name, "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}
    config = {"EndpointConfigName": name, "ProductionVariants": [variant]}
    if capture:
        config["DataCaptureConfig"] = capture
    sm.create_endpoint_config(**config)
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    while (status := sm.describe_endpoint(EndpointName=name)["EndpointStatus"]) == "Creating":
        time.sleep(0.05)
    if status != "InService":
        raise SystemExit(f"endpoint {name} is {status}")


def _captured(s3: Any) -> int:
    """The records under the capture destination (one JSON line each)."""
    count = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="capture/"):
        for item in page.get("Contents", []):
            body = s3.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read()
            count += sum(1 for line in body.splitlines() if line.strip())
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--trees", type=int, default=100)
    args = parser.parse_args()

    from signed_load import sign, wrk

    from helpers import running_platform

    artifact, body = _artifact(args.trees)
    results: dict[tuple[str, int], list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp, running_platform(Path(tmp) / "home", Path(tmp) / "aws") as p:
        session = p.session()
        s3, sm = session.client("s3"), session.client("sagemaker")
        s3.create_bucket(Bucket=BUCKET)
        s3.put_object(Bucket=BUCKET, Key="model.tar.gz", Body=artifact)
        role = f"arn:aws:iam::{session.client('sts').get_caller_identity()['Account']}:role/OpenSageExecutionRole"
        capture = {
            "EnableCapture": True,
            "InitialSamplingPercentage": 100,
            "DestinationS3Uri": f"s3://{BUCKET}/capture",
            "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
        }
        _deploy(sm, "off", role, None)
        _deploy(sm, "on", role, capture)
        credentials = session.get_credentials()
        key = (credentials.access_key, credentials.secret_key)
        headers = {"Content-Type": "text/csv", "Accept": "text/csv"}
        signed = {
            n: sign(f"{p.api_url}/endpoints/{n}/invocations", body, headers, "sagemaker", key) for n in ("off", "on")
        }
        for name in ("off", "on"):
            wrk(signed[name], 4, 2)  # warm-up
        for c in args.concurrency:
            for _ in range(args.reps):
                for name in ("off", "on"):
                    result = wrk(signed[name], c, args.duration)
                    results.setdefault((name, c), []).append(result)
        answered = sum(r["requests"] - r["errors"] for (n, _), rs in results.items() if n == "on" for r in rs)
        time.sleep(8)  # the capture buffers are written every few seconds
        records = _captured(s3)

    print(f"\nInvokeEndpoint throughput, 1-row CSV, {args.trees} trees, {args.reps} x {args.duration:.0f} s per cell")
    print(f"{'concurrency':<12}{'capture':<9}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    ratios = []
    for c in args.concurrency:
        rps = {}
        for name in ("off", "on"):
            rs = results[(name, c)]
            rps[name] = statistics.median(r["rps"] for r in rs)
            p50 = statistics.median(r["p50_us"] for r in rs) / 1000
            p99 = statistics.median(r["p99_us"] for r in rs) / 1000
            errors = sum(r["errors"] for r in rs)
            print(f"{c:<12}{name:<9}{rps[name]:10.0f}{p50:9.2f}{p99:9.2f}{errors:8d}")
        ratios.append(rps["on"] / rps["off"])
        print(f"{'':<12}{'on/off':<9}{ratios[-1]:10.2f}")
    print(f"\nCaptured records: {records} (requests the capturing endpoint answered in the timed runs: {answered},")
    print("plus its warm-up); each request is one record with its input and output.")
    verdict = "met" if min(ratios) >= GOAL else "NOT met"
    print(f"Goal: capture on at least {GOAL} x the throughput of capture off: {verdict} (lowest {min(ratios):.2f})")


if __name__ == "__main__":
    main()
