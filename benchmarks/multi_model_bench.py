"""Multi-model endpoint benchmark: a loaded model's latency against a single-model endpoint, and first-use load time.

One platform (``opensage up`` on a temporary home), one XGBoost model (--trees trees over 20
features, trained here), served twice on ml.m5.large, one instance each:
* ``single``: a single-model endpoint of that model.tar.gz;
* ``multi``: a multi-model endpoint (Mode MultiModel) over a prefix holding it under several names.

Latency at concurrency 1: one SigV4-signed InvokeEndpoint request (a 1-row CSV body; the multi-model
one with TargetModel) replayed over one kept-alive connection per endpoint, the two endpoints'
requests alternated one by one (--rounds x --requests each) so that drift on a shared machine hits
both alike; p50, p99 and mean of every request. The goal: the loaded model's p50 within 0.2 ms of the single
model's.

First invocation: --fresh targets never used before (copies under new names): the first request's
latency (download, unpack, load, predict) against the second's, plus the platform's own
ModelDownloadingTime, ModelLoadingTime and ModelLoadingWaitTime from CloudWatch (their mean over
those targets; the endpoint's first load, which imports XGBoost, is left out).

Usage: python benchmarks/multi_model_bench.py [--requests 2000] [--rounds 5] [--fresh 8] [--trees 100]
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import io
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
BUCKET = "mme-bench"
GOAL_MS = 0.2


def _artifact(trees: int) -> tuple[bytes, bytes]:
    """A model.tar.gz of ``trees`` trees over 20 features, and a 1-row CSV body."""
    import numpy as np
    import xgboost as xgb

    rng = np.random.default_rng(42)
    x = rng.normal(size=(5000, 20)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] - x[:, 2] > 0).astype(int)
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 6}, xgb.DMatrix(x, label=y), trees)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "xgboost-model"
        booster.save_model(str(path) + ".ubj")
        Path(str(path) + ".ubj").rename(path)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            tar.add(path, arcname="xgboost-model")
    return buf.getvalue(), (",".join(f"{v:.4f}" for v in x[0]) + "\n").encode()


def _deploy(sm: Any, name: str, container: dict[str, Any], role: str) -> None:
    sm.create_model(ModelName=name, PrimaryContainer=container, ExecutionRoleArn=role)
    variant = {"VariantName": "AllTraffic", "ModelName": name, "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}
    sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[variant])
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    while (status := sm.describe_endpoint(EndpointName=name)["EndpointStatus"]) == "Creating":
        time.sleep(0.05)
    if status != "InService":
        raise SystemExit(f"endpoint {name} is {status}: {sm.describe_endpoint(EndpointName=name).get('FailureReason')}")


class Replayer:
    """One signed request, sent again and again over one kept-alive connection."""

    def __init__(self, api_url: str, endpoint: str, body: bytes, key: tuple[str, str], target: str | None) -> None:
        from signed_load import sign

        headers = {"Content-Type": "text/csv", "Accept": "text/csv"}
        if target:
            headers["X-Amzn-SageMaker-Target-Model"] = target
        self.signed = sign(f"{api_url}/endpoints/{endpoint}/invocations", body, headers, "sagemaker", key)
        parts = urlsplit(api_url)
        self.conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)
        self.path = urlsplit(self.signed.url).path

    def once(self) -> float:
        started = time.perf_counter()
        self.conn.request("POST", self.path, self.signed.body, self.signed.headers)
        response = self.conn.getresponse()
        body = response.read()
        took = time.perf_counter() - started
        if response.status != 200:
            raise SystemExit(f"{self.path}: {response.status} {body[:300]!r}")
        return took

    def block(self, n: int) -> list[float]:
        return [self.once() for _ in range(n)]


def _stats(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50": statistics.median(ordered) * 1000,
        "p99": ordered[int(len(ordered) * 0.99) - 1] * 1000,
        "mean": statistics.fmean(ordered) * 1000,
    }


def _cloudwatch(cw: Any, endpoint: str, metric: str) -> dict[str, float]:
    now = dt.datetime.now(dt.UTC)
    points = cw.get_metric_statistics(
        Namespace="AWS/SageMaker", MetricName=metric, Period=3600, Statistics=["SampleCount", "Sum"],
        Dimensions=[{"Name": "EndpointName", "Value": endpoint}, {"Name": "VariantName", "Value": "AllTraffic"}],
        StartTime=now - dt.timedelta(hours=1), EndTime=now + dt.timedelta(minutes=5),
    )["Datapoints"]  # fmt: skip
    return points[0] if points else {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000, help="requests per round and endpoint")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--fresh", type=int, default=8, help="targets whose first invocation is timed")
    parser.add_argument("--trees", type=int, default=100)
    args = parser.parse_args()

    from helpers import running_platform

    artifact, body = _artifact(args.trees)
    with tempfile.TemporaryDirectory() as tmp, running_platform(Path(tmp) / "home", Path(tmp) / "aws") as p:
        session = p.session()
        s3, sm, cw = session.client("s3"), session.client("sagemaker"), session.client("cloudwatch")
        s3.create_bucket(Bucket=BUCKET)
        s3.put_object(Bucket=BUCKET, Key="single/model.tar.gz", Body=artifact)
        for n in range(args.fresh + 1):
            s3.put_object(Bucket=BUCKET, Key=f"multi/model-{n}.tar.gz", Body=artifact)
        role = f"arn:aws:iam::{session.client('sts').get_caller_identity()['Account']}:role/OpenSageExecutionRole"
        _deploy(sm, "single", {"Image": IMAGE, "ModelDataUrl": f"s3://{BUCKET}/single/model.tar.gz"}, role)
        _deploy(sm, "multi", {"Image": IMAGE, "ModelDataUrl": f"s3://{BUCKET}/multi/", "Mode": "MultiModel"}, role)
        credentials = session.get_credentials()
        key = (credentials.access_key, credentials.secret_key)

        single = Replayer(p.api_url, "single", body, key, None)
        multi = Replayer(p.api_url, "multi", body, key, "model-0.tar.gz")
        multi.once()  # model-0 loaded
        single.block(500), multi.block(500)  # warm-up
        samples: dict[str, list[float]] = {"single": [], "multi": []}
        for _ in range(args.rounds * args.requests):  # alternated request by request: drift hits both alike
            samples["single"].append(single.once())
            samples["multi"].append(multi.once())

        metrics = ("ModelDownloadingTime", "ModelLoadingTime", "ModelLoadingWaitTime")
        time.sleep(6)  # the platform writes its metrics every 5 s: these are model-0's (the first import)
        before = {m: _cloudwatch(cw, "multi", m) for m in metrics}
        first, second = [], []
        for n in range(1, args.fresh + 1):
            fresh = Replayer(p.api_url, "multi", body, key, f"model-{n}.tar.gz")
            first.append(fresh.once())
            second.append(fresh.once())
        time.sleep(6)
        after = {m: _cloudwatch(cw, "multi", m) for m in metrics}
        platform = {}  # the fresh targets' mean: the hour's sums and counts, less those before them
        for m in metrics:
            count = after[m].get("SampleCount", 0) - before[m].get("SampleCount", 0)
            if count > 0:
                platform[m] = (after[m]["Sum"] - before[m].get("Sum", 0.0)) / count

    s, m = _stats(samples["single"]), _stats(samples["multi"])
    n = len(samples["single"])
    print(f"\nInvokeEndpoint latency at concurrency 1, 1-row CSV, {args.trees} trees ({n} requests each, ms)")
    print(f"{'endpoint':<42}{'p50':>8}{'p99':>8}{'mean':>8}")
    print(f"{'single-model':<42}{s['p50']:8.3f}{s['p99']:8.3f}{s['mean']:8.3f}")
    print(f"{'multi-model, target loaded':<42}{m['p50']:8.3f}{m['p99']:8.3f}{m['mean']:8.3f}")
    delta = m["p50"] - s["p50"]
    print(f"{'difference':<42}{delta:8.3f}{m['p99'] - s['p99']:8.3f}{m['mean'] - s['mean']:8.3f}")
    print(f"\nFirst invocation of a target ({args.fresh} targets never used before, ms)")
    print(f"{'':<42}{'median':>8}{'max':>8}")
    print(f"{'first request (load + predict)':<42}{statistics.median(first) * 1000:8.1f}{max(first) * 1000:8.1f}")
    print(f"{'second request (loaded)':<42}{statistics.median(second) * 1000:8.1f}{max(second) * 1000:8.1f}")
    for metric, mean in platform.items():
        print(f"{metric + ' (CloudWatch, mean)':<42}{mean / 1000:8.1f}")
    verdict = "met" if delta <= GOAL_MS else "NOT met"
    print(f"\nGoal: loaded model within {GOAL_MS} ms of the single-model endpoint at p50: {verdict} ({delta:+.3f} ms)")


if __name__ == "__main__":
    main()
