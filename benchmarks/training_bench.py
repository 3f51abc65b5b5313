"""Training-job benchmark: OpenSage's built-in XGBoost job against raw xgboost on the same data.

For each data set (the bench kit's bank-marketing-shaped CSV, 41k and 1M rows) it measures, in the
same run and with the same parameters:

* raw: a fresh Python process that imports xgboost, parses the CSV and trains (the bench kit's
  ``train_bench.py --job``), wall time from spawn to exit;
* OpenSage: CreateTrainingJob -> Completed as the client sees it (boto3, polling DescribeTrainingJob every
  20 ms for the first 3 s, then every 250 ms so that polling does not steal the training's CPU), the
  same from the job's own CreationTime/TrainingEndTime, and
  CreateTrainingJob -> the training process running (from the job's SecondaryStatusTransitions and
  the container log's first line).

Usage: python benchmarks/training_bench.py [--rows 41188 1000000] [--reps 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KIT = ROOT.parent / "shared" / "bench"
sys.path.insert(0, str(ROOT / "tests"))

IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"


def kit_params() -> tuple[dict, int]:
    sys.path.insert(0, str(KIT))
    import train_bench  # the bench kit's floor: same parameters for both sides

    return dict(train_bench.PARAMS), int(train_bench.NUM_ROUND)


def make_data(rows: int, out_dir: Path) -> Path:
    path = out_dir / f"bank_{rows}.csv"
    if not path.exists():
        subprocess.run(
            [sys.executable, str(KIT / "gen_data.py"), "--rows", str(rows), "--seed", "42", "--out", str(path)],
            check=True,
            capture_output=True,
        )
    return path


def raw_job(path: Path) -> float:
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            str(KIT / "train_bench.py"),
            "--data",
            str(path),
            "--job",
            "--model",
            str(path.with_suffix(".ubj")),
        ],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - started


def opensage_job(platform, uri: str, params: dict, rounds: int) -> dict:  # type: ignore[no-untyped-def]
    session = platform.session()
    sm = session.client("sagemaker")
    account = session.client("sts").get_caller_identity()["Account"]
    hps = {k: str(v) for k, v in params.items() if k not in ("nthread",)}
    hps["num_round"] = str(rounds)
    name = f"bench-{uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    sm.create_training_job(
        TrainingJobName=name,
        AlgorithmSpecification={"TrainingImage": IMAGE, "TrainingInputMode": "File"},
        RoleArn=f"arn:aws:iam::{account}:role/OpenSageExecutionRole",
        InputDataConfig=[
            {
                "ChannelName": "train",
                "ContentType": "text/csv",
                "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uri}},
            }
        ],
        OutputDataConfig={"S3OutputPath": "s3://bench/output"},
        ResourceConfig={"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 5},
        StoppingCondition={"MaxRuntimeInSeconds": 3600},
        HyperParameters=hps,
    )
    while True:
        desc = sm.describe_training_job(TrainingJobName=name)
        if desc["TrainingJobStatus"] in ("Completed", "Failed", "Stopped"):
            break
        time.sleep(0.02 if time.perf_counter() - started < 3 else 0.25)
    wall = time.perf_counter() - started
    if desc["TrainingJobStatus"] != "Completed":
        raise RuntimeError(f"{name}: {desc.get('FailureReason')}")
    transitions = {t["Status"]: t for t in desc["SecondaryStatusTransitions"]}
    created = desc["CreationTime"].timestamp()
    to_training = transitions["Training"]["StartTime"].timestamp() - created
    server = desc["TrainingEndTime"].timestamp() - created
    return {
        "wall_s": wall,
        "server_s": server,
        "create_to_training_ms": to_training * 1000,
        "download_s": transitions["Training"]["StartTime"].timestamp()
        - transitions["Downloading"]["StartTime"].timestamp(),
    }


def main() -> None:
    from helpers import running_platform

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[41188, 1000000])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", default=os.environ.get("PERF_ROOT", "/tmp/opensage-bench"))
    a = ap.parse_args()
    out = Path(a.out)
    (out / "data").mkdir(parents=True, exist_ok=True)
    params, rounds = kit_params()
    results = []
    with tempfile.TemporaryDirectory() as tmp, running_platform(Path(tmp) / "home", Path(tmp) / "aws") as platform:
        s3 = platform.session().client("s3")
        s3.create_bucket(Bucket="bench")
        for rows in a.rows:
            path = make_data(rows, out / "data")
            s3.upload_file(str(path), "bench", f"data/{rows}/train.csv")
            uri = f"s3://bench/data/{rows}/"
            raw, ours = [], []
            for _ in range(a.reps):
                raw.append(raw_job(path))
                ours.append(opensage_job(platform, uri, params, rounds))
            row = {
                "rows": rows,
                "raw_s": statistics.median(raw),
                "opensage_s": statistics.median(r["wall_s"] for r in ours),
                "server_s": statistics.median(r["server_s"] for r in ours),
                "create_to_training_ms": statistics.median(r["create_to_training_ms"] for r in ours),
                "download_s": statistics.median(r["download_s"] for r in ours),
            }
            row["ratio"] = row["opensage_s"] / row["raw_s"]
            results.append(row)
    (out / "results").mkdir(parents=True, exist_ok=True)
    (out / "results" / "training_bench.json").write_text(json.dumps(results, indent=2))
    print(f"\nxgboost params {params}, num_round {rounds}; medians of {a.reps} runs\n")
    print(
        "| rows | raw xgboost job (s) | OpenSage Create->Completed, client (s) | same, job record (s) | ratio |"
        " Create->Training (ms) | download (s) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['rows']:,} | {r['raw_s']:.2f} | {r['opensage_s']:.2f} | {r['server_s']:.2f} | {r['ratio']:.2f} | "
            f"{r['create_to_training_ms']:.0f} | {r['download_s']:.2f} |"
        )


if __name__ == "__main__":
    main()
