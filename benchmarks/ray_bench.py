"""Local compute against Ray, same data, same run: training jobs and a two-instance endpoint.

Three platforms, one after the other (each alone on the machine while it is measured):
* ``local``: ``opensage up`` (containers are this machine's processes);
* ``ray-1node``: ``opensage up --compute ray`` (a Ray head the platform starts: one node);
* ``ray-2nodes``: ``opensage up --compute ray --ray-address`` on a cluster of two ``ray start`` nodes of
  one CPU each (tests/ray_kit.py), token authentication on.

Training: the kit's bank-shaped data (41,188 rows, gen_data.py, seed 42) with the built-in XGBoost 1.7-1
(100 rounds), 1 instance on every platform and 2 instances (the data in two files, ShardedByS3Key) on
``local`` and ``ray-2nodes``. From the job's record and log: Create -> first line (CreationTime to the
built-in XGBoost's first own line, "Single/Distributed node training", in its log streams: the
container's process is running and has imported the algorithm; about 50 ms resolution) and Create ->
Completed (to TrainingEndTime); and the wall time from CreateTrainingJob until DescribeTrainingJob says Completed
(polled every 20 ms).

Endpoint: the kit's model behind 2 instances on ``local`` and on ``ray-2nodes`` (one model server per
node), SigV4-signed 1-row CSV requests replayed by wrk for --duration seconds at concurrency 1 and 8:
requests/s, p50 and p99. Medians of --reps runs. wrk must be installed (apt-get install -y wrk).

Usage: python benchmarks/ray_bench.py [--reps 3] [--duration 10] [--platforms local ray-1node ray-2nodes]
       [--parts training endpoint]
       (PERF_ROOT, default /tmp/opensage-bench, holds the data and the model)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

import serving_bench  # noqa: E402  (the kit's data and model, endpoints, signed wrk runs)

PLATFORMS = ("local", "ray-1node", "ray-2nodes")
BUCKET = "bench-ray"
HYPERPARAMETERS = {"objective": "binary:logistic", "num_round": "100", "max_depth": "5", "eta": "0.2"}


@contextlib.contextmanager
def platform(kind: str) -> Iterator[Any]:
    from helpers import running_platform
    from ray_kit import Cluster

    with tempfile.TemporaryDirectory() as tmp:
        home, aws = Path(tmp) / "home", Path(tmp) / "aws"
        if kind == "local":
            with running_platform(home, aws, timeout=180) as up:
                yield up
        elif kind == "ray-1node":
            with running_platform(home, aws, extra_args=("--compute", "ray"), timeout=180) as up:
                yield up
        else:
            cluster = Cluster()
            try:
                cluster.start()
                args = ("--compute", "ray", "--ray-address", cluster.address)
                with running_platform(home, aws, extra_args=args, extra_env=cluster.env, timeout=180) as up:
                    yield up
            finally:
                cluster.stop()


def upload_data(p: Any, csv: Path) -> None:
    """The kit's bank data (label first, no header, as the built-in XGBoost reads CSV): one file, and in halves."""
    s3 = p.session().client("s3")
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket=BUCKET)
    lines = csv.read_bytes().splitlines(keepends=True)
    for key, part in (("whole/data.csv", lines), ("halves/a.csv", lines[0::2]), ("halves/b.csv", lines[1::2])):
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"".join(part))


def train(p: Any, instances: int) -> dict[str, float]:
    session = p.session()
    sm = session.client("sagemaker")
    account = session.client("sts").get_caller_identity()["Account"]
    prefix, distribution = ("whole", "FullyReplicated") if instances == 1 else ("halves", "ShardedByS3Key")
    name = f"bench-{instances}-{uuid.uuid4().hex[:8]}"
    source = {"S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/{prefix}/", "S3DataDistributionType": distribution}
    started = time.perf_counter()
    sm.create_training_job(
        TrainingJobName=name,
        AlgorithmSpecification={"TrainingImage": serving_bench.IMAGE, "TrainingInputMode": "File"},
        RoleArn=f"arn:aws:iam::{account}:role/OpenSageExecutionRole",
        HyperParameters=HYPERPARAMETERS,
        InputDataConfig=[{"ChannelName": "train", "ContentType": "text/csv", "DataSource": {"S3DataSource": source}}],
        OutputDataConfig={"S3OutputPath": f"s3://{BUCKET}/output"},
        ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": instances, "VolumeSizeInGB": 1},
        StoppingCondition={"MaxRuntimeInSeconds": 900},
    )
    while (job := sm.describe_training_job(TrainingJobName=name))["TrainingJobStatus"] == "InProgress":
        time.sleep(0.02)
    wall = time.perf_counter() - started
    if job["TrainingJobStatus"] != "Completed":
        raise SystemExit(f"{name} is {job['TrainingJobStatus']}: {job.get('FailureReason')}")
    created = job["CreationTime"]
    logs = session.client("logs")
    group = "/aws/sagemaker/TrainingJobs"
    streams = logs.describe_log_streams(logGroupName=group, logStreamNamePrefix=name)["logStreams"]
    first = min(  # the algorithm's own first line (the platform's own lines come before it)
        event["timestamp"]
        for stream in streams
        for event in logs.get_log_events(logGroupName=group, logStreamName=stream["logStreamName"], startFromHead=True)[
            "events"
        ]
        if "node training" in event["message"]
    )
    return {
        "to_running_s": first / 1000 - created.timestamp(),
        "to_completed_s": (job["TrainingEndTime"] - created).total_seconds(),
        "wall_s": wall,
    }


def serve(p: Any, data: Path, model: Path, expected: dict, reps: int, duration: int) -> dict[int, list[dict]]:
    sm, runtime, key = serving_bench._deploy(p, model)
    name = "bench-2"
    serving_bench._endpoint(sm, runtime, name, 2, data, expected)
    body = (data / "body_1.csv").read_bytes()
    serving_bench._load(p, name, key, body, 8, 3)  # warm-up
    runs: dict[int, list[dict]] = {}
    for _ in range(reps):
        for concurrency in (1, 8):
            runs.setdefault(concurrency, []).append(serving_bench._load(p, name, key, body, concurrency, duration))
    serving_bench._delete_endpoint(sm, name)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--platforms", nargs="+", choices=PLATFORMS, default=list(PLATFORMS))
    parser.add_argument("--parts", nargs="+", choices=("training", "endpoint"), default=["training", "endpoint"])
    args = parser.parse_args()
    serving_bench._kit()
    root = Path(os.environ.get("PERF_ROOT", "/tmp/opensage-bench"))
    data, model = serving_bench.prepare(root)
    _, expected = serving_bench.reference(data, model)
    training: dict[tuple[str, int], list[dict[str, float]]] = {}
    serving: dict[str, dict[int, list[dict]]] = {}
    for kind in args.platforms:
        with platform(kind) as p:
            upload_data(p, data / "bank_41k.csv")
            for instances in ((1, 2) if kind != "ray-1node" else (1,)) if "training" in args.parts else ():
                train(p, instances)  # warm-up: the image's environment, the first actor's imports
                training[(kind, instances)] = [train(p, instances) for _ in range(args.reps)]
            if kind != "ray-1node" and "endpoint" in args.parts:
                serving[kind] = serve(p, data, model, expected, args.reps, args.duration)

    def median(runs: list[dict], field: str) -> float:
        return statistics.median(r[field] for r in runs)

    print(f"\nTraining, built-in XGBoost, 41,188 rows, 100 rounds (median of {args.reps})")
    print(f"{'platform':<12} {'instances':>9} {'Create->first line s':>21} {'Create->Completed s':>20} {'wall s':>8}")
    for (kind, instances), runs in training.items():
        print(
            f"{kind:<12} {instances:>9} {median(runs, 'to_running_s'):>21.2f} "
            f"{median(runs, 'to_completed_s'):>20.2f} {median(runs, 'wall_s'):>8.2f}"
        )
    print(f"\nEndpoint, 2 instances, 1-row CSV, {args.duration} s per run (median of {args.reps})")
    print(f"{'platform':<12} {'concurrency':>11} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for kind, by_concurrency in serving.items():
        for concurrency, runs in sorted(by_concurrency.items()):
            print(
                f"{kind:<12} {concurrency:>11} {median(runs, 'rps'):>9.0f} {median(runs, 'p50_us') / 1000:>8.2f} "
                f"{median(runs, 'p99_us') / 1000:>8.2f} {sum(r['errors'] for r in runs):>7}"
            )


if __name__ == "__main__":
    main()
