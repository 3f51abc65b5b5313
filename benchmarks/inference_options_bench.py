"""Inference options benchmark: a serverless variant's cold start against its warm requests, and one
asynchronous request end to end against the same model answering InvokeEndpoint.

One platform (``opensage up`` on a temporary home, serverless idle period --idle seconds), one XGBoost
model (4 features, 20 trees, trained here), a 1-row CSV body, every call made with boto3 as a user's
code makes it:

* ``serverless``: an endpoint whose variant has ServerlessConfig(2048 MB, MaxConcurrency 1). Each of
  --cold rounds waits until the variant has no model server left (the idle period, then the
  scale-in), times the first InvokeEndpoint (a cold start: a model server is started, the request
  waits for it), then --warm more requests. Also the platform's own ModelSetupTime (CloudWatch,
  mean over the rounds).
* ``async``: an endpoint with one ml.m5.large instance and an AsyncInferenceConfig. Each of --async
  requests: PutObject of the input, InvokeEndpointAsync (its own latency: the 202), then
  HeadObject on the OutputLocation every 5 ms until the result is there: the end-to-end latency.
  The same body through InvokeEndpoint on a real-time endpoint of the same model is the reference.

Usage: python benchmarks/inference_options_bench.py [--cold 5] [--warm 50] [--async 50] [--idle 2]
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
BUCKET = "inference-options-bench"
BODY = b"1.5,0,0,0"


def _artifact() -> bytes:
    import numpy as np
    import xgboost as xgb

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 4))
    booster = xgb.train({"objective": "binary:logistic"}, xgb.DMatrix(x, label=(x[:, 0] > 0).astype(int)), 20)
    buf = io.BytesIO()
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(fileobj=buf, mode="w:gz") as tar:
        path = Path(tmp) / "xgboost-model"
        booster.save_model(str(path.with_suffix(".ubj")))
        path.with_suffix(".ubj").rename(path)
        tar.add(path, arcname="xgboost-model")
    return buf.getvalue()


def _servers(home: Path, endpoint: str) -> int:
    where = str(home / "endpoints" / endpoint)
    found = 0
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        server = "opensage.serving.modelserver" in " ".join(proc.info["cmdline"] or [])
        found += server and (proc.info["cwd"] or "").startswith(where)
    return found


def _deploy(sm: Any, name: str, variant: dict[str, Any], **config: Any) -> None:
    sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[variant], **config)
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    while (status := sm.describe_endpoint(EndpointName=name)["EndpointStatus"]) != "InService":
        if status == "Failed":
            raise RuntimeError(sm.describe_endpoint(EndpointName=name).get("FailureReason"))
        time.sleep(0.1)


def _ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "n": len(ordered),
        "p50": statistics.median(ordered) * 1e3,
        "p99": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e3,
        "min": ordered[0] * 1e3,
        "max": ordered[-1] * 1e3,
    }


def _invoke(rt: Any, name: str) -> float:
    started = time.perf_counter()
    rt.invoke_endpoint(EndpointName=name, ContentType="text/csv", Body=BODY)["Body"].read()
    return time.perf_counter() - started


def _serverless(p: Any, sm: Any, rt: Any, cw: Any, rounds: int, warm: int) -> dict[str, Any]:
    name = "bench-serverless"
    _deploy(sm, name, {"VariantName": "AllTraffic", "ModelName": "bench-model",
                       "ServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 1}})
    cold: list[float] = []
    hot: list[float] = []
    for _ in range(rounds):
        while _servers(p.home, name):
            time.sleep(0.05)
        cold.append(_invoke(rt, name))
        hot.extend(_invoke(rt, name) for _ in range(warm))
    now = dt.datetime.now(dt.UTC)
    points = cw.get_metric_statistics(
        Namespace="AWS/SageMaker", MetricName="ModelSetupTime",
        Dimensions=[{"Name": "EndpointName", "Value": name}, {"Name": "VariantName", "Value": "AllTraffic"}],
        StartTime=now - dt.timedelta(hours=1), EndTime=now + dt.timedelta(minutes=1), Period=3600,
        Statistics=["Average", "SampleCount"],
    )["Datapoints"]
    setup = points[0]["Average"] / 1e3 if points else float("nan")
    return {"cold": _ms(cold), "warm": _ms(hot), "setup_ms": setup}


def _asynchronous(sm: Any, rt: Any, s3: Any, n: int) -> dict[str, Any]:
    variant = {"VariantName": "AllTraffic", "ModelName": "bench-model", "InstanceType": "ml.m5.large",
               "InitialInstanceCount": 1}
    _deploy(sm, "bench-async", variant,
            AsyncInferenceConfig={"OutputConfig": {"S3OutputPath": f"s3://{BUCKET}/out"}})
    _deploy(sm, "bench-realtime", variant)
    submit, total = [], []
    for i in range(n + 3):  # the first three warm the connections up and are not counted
        started = time.perf_counter()
        s3.put_object(Bucket=BUCKET, Key=f"in/{i}.csv", Body=BODY)
        answer = rt.invoke_endpoint_async(
            EndpointName="bench-async", InputLocation=f"s3://{BUCKET}/in/{i}.csv", ContentType="text/csv"
        )
        accepted = time.perf_counter()
        key = answer["OutputLocation"].split("/", 3)[3]
        while True:
            try:
                s3.head_object(Bucket=BUCKET, Key=key)
                break
            except s3.exceptions.ClientError:
                time.sleep(0.005)
        if i >= 3:
            submit.append(accepted - started)
            total.append(time.perf_counter() - started)
    for _ in range(3):
        _invoke(rt, "bench-realtime")
    realtime = [_invoke(rt, "bench-realtime") for _ in range(n)]
    return {"submit": _ms(submit), "end_to_end": _ms(total), "realtime": _ms(realtime)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cold", type=int, default=5, help="cold starts of the serverless variant")
    parser.add_argument("--warm", type=int, default=50, help="warm requests after each cold start")
    parser.add_argument("--async", dest="n_async", type=int, default=50, help="asynchronous requests")
    parser.add_argument("--idle", type=float, default=2.0, help="the serverless idle period (s)")
    args = parser.parse_args()

    from botocore.config import Config

    from helpers import running_platform

    env = {"OPENSAGE_SERVERLESS_IDLE_S": str(args.idle)}
    with tempfile.TemporaryDirectory() as tmp, running_platform(
        Path(tmp) / "home", Path(tmp) / "aws", extra_env=env
    ) as p:
        session = p.session()
        sm, s3, cw = session.client("sagemaker"), session.client("s3"), session.client("cloudwatch")
        rt = session.client("sagemaker-runtime", config=Config(retries={"total_max_attempts": 1}))
        account = session.client("sts").get_caller_identity()["Account"]
        s3.create_bucket(Bucket=BUCKET)
        s3.put_object(Bucket=BUCKET, Key="model.tar.gz", Body=_artifact())
        sm.create_model(
            ModelName="bench-model",
            PrimaryContainer={"Image": IMAGE, "ModelDataUrl": f"s3://{BUCKET}/model.tar.gz"},
            ExecutionRoleArn=f"arn:aws:iam::{account}:role/OpenSageExecutionRole",
        )
        serverless = _serverless(p, sm, rt, cw, args.cold, args.warm)
        asynchronous = _asynchronous(sm, rt, s3, args.n_async)

    rows = [
        ("serverless: cold start (first request)", serverless["cold"]),
        ("serverless: warm request", serverless["warm"]),
        ("async: InvokeEndpointAsync (the 202)", asynchronous["submit"]),
        ("async: one request end to end", asynchronous["end_to_end"]),
        ("real-time InvokeEndpoint, same model", asynchronous["realtime"]),
    ]
    print(f"\n{'what':44} {'n':>5} {'p50 ms':>9} {'p99 ms':>9} {'min ms':>9} {'max ms':>9}")
    for label, s in rows:
        print(f"{label:44} {s['n']:>5} {s['p50']:>9.1f} {s['p99']:>9.1f} {s['min']:>9.1f} {s['max']:>9.1f}")
    print(f"\nModelSetupTime (CloudWatch, mean of the cold starts): {serverless['setup_ms']:.0f} ms")
    print(f"cold start / warm p50: {serverless['cold']['p50'] / serverless['warm']['p50']:.0f}x; "
          f"async end to end - real-time p50: "
          f"{asynchronous['end_to_end']['p50'] - asynchronous['realtime']['p50']:.1f} ms "
          "(PutObject, the queue's store writes, GetObject and PutObject by the worker, HeadObject polling)")


if __name__ == "__main__":
    main()
