"""Tuning benchmark: a 20-trial Bayesian tuning job of the built-in XGBoost against plain Optuna + xgboost.

On the bench kit's bank-marketing-shaped data (41,188 rows, split 80/20 into train and validation),
in the same run, with the same search space, sampler settings (TPE, the same number of random
start-up trials) and xgboost parameters (the kit's, ``num_round`` 100):

* floor: one Python process that reads the CSVs once and runs ``study.optimize(n_trials=20,
  n_jobs=2)``, each trial an ``xgb.train`` with ``nthread=1`` (two at a time on two threads),
  objective = the validation AUC of the last round; wall time from spawn to exit;
* OpenSage: CreateHyperParameterTuningJob -> Completed as a boto3 client sees it (polling every
  0.25 s), MaxParallelTrainingJobs 2, each trial an ordinary training job on ``ml.m5.large``;
  the same from the job record (CreationTime -> HyperParameterTuningEndTime).

It prints wall time and best objective of each, the ratio (goal: <= 1.3x the floor) and the
platform's overhead per trial ((OpenSage - floor) wall time x parallel trials / trials).

Wall times move with whatever else the machine runs; the CPU seconds of each (the floor's process,
the API server with the trial processes it reaped) do not, and are printed beside them.

The floor is run twice: evaluating the validation set only, and both sets each round as the
container does (SageMaker's XGBoost evaluates every channel of its watchlist, train included).

Usage: python benchmarks/tuning_bench.py [--trials 20] [--parallel 2] [--reps 1]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
KIT = ROOT.parent / "shared" / "bench"
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))

IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
ROWS = 41188
RANGES = {
    "ContinuousParameterRanges": [
        {"Name": "eta", "MinValue": "0.01", "MaxValue": "0.5", "ScalingType": "Logarithmic"},
        {"Name": "subsample", "MinValue": "0.5", "MaxValue": "1.0", "ScalingType": "Linear"},
    ],
    "IntegerParameterRanges": [
        {"Name": "max_depth", "MinValue": "2", "MaxValue": "8", "ScalingType": "Linear"},
        {"Name": "min_child_weight", "MinValue": "1", "MaxValue": "10", "ScalingType": "Linear"},
    ],
}
TUNED = {"eta", "subsample", "max_depth", "min_child_weight"}

FLOOR = """
import json, sys, time
import numpy as np, optuna, pandas as pd, xgboost as xgb
from opensage.tuning.strategies import startup_trials
train_path, val_path, params, rounds, trials, parallel, watch = sys.argv[1:8]
params, rounds, trials, parallel = json.loads(params), int(rounds), int(trials), int(parallel)
tr = pd.read_csv(train_path, header=None, engine="pyarrow").to_numpy(np.float32)
va = pd.read_csv(val_path, header=None, engine="pyarrow").to_numpy(np.float32)
dtrain, dval = xgb.DMatrix(tr[:, 1:], label=tr[:, 0]), xgb.DMatrix(va[:, 1:], label=va[:, 0])
def objective(trial):
    p = dict(params, nthread=1, eval_metric="auc")
    p["eta"] = trial.suggest_float("eta", 0.01, 0.5, log=True)
    p["subsample"] = trial.suggest_float("subsample", 0.5, 1.0)
    p["max_depth"] = trial.suggest_int("max_depth", 2, 8)
    p["min_child_weight"] = trial.suggest_int("min_child_weight", 1, 10)
    log = {}
    evals = [(dtrain, "train"), (dval, "validation")] if watch == "both" else [(dval, "validation")]
    xgb.train(p, dtrain, rounds, evals=evals, evals_result=log, verbose_eval=False)
    return log["validation"]["auc"][-1]
optuna.logging.set_verbosity(optuna.logging.WARNING)
study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(
    seed=0, n_startup_trials=startup_trials(trials)))
started = time.perf_counter()
study.optimize(objective, n_trials=trials, n_jobs=parallel)
print(json.dumps({"best": study.best_value, "trials_s": time.perf_counter() - started}))
"""


def kit_params() -> tuple[dict, int]:
    sys.path.insert(0, str(KIT))
    import train_bench  # the bench kit's floor parameters

    return dict(train_bench.PARAMS), int(train_bench.NUM_ROUND)


def make_data(out_dir: Path) -> tuple[Path, Path]:
    full = out_dir / f"bank_{ROWS}.csv"
    if not full.exists():
        subprocess.run(
            [sys.executable, str(KIT / "gen_data.py"), "--rows", str(ROWS), "--seed", "42", "--out", str(full)],
            check=True,
            capture_output=True,
        )
    train, val = out_dir / f"bank_{ROWS}_train.csv", out_dir / f"bank_{ROWS}_validation.csv"
    if not val.exists():
        lines = full.read_text().splitlines(keepends=True)
        cut = int(len(lines) * 0.8)
        train.write_text("".join(lines[:cut]))
        val.write_text("".join(lines[cut:]))
    return train, val


def floor(train: Path, val: Path, params: dict, rounds: int, trials: int, parallel: int, watch: str) -> dict:
    """``watch``: "validation" (the objective only) or "both" (train and validation each round, as the
    SageMaker XGBoost container's watchlist does, and so OpenSage's)."""
    started = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(FLOOR), str(train), str(val), json.dumps(params), str(rounds)]
        + [str(trials), str(parallel), watch],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return {"wall_s": time.perf_counter() - started, "best": result["best"], "cpu_s": cpu}


def _cpu(proc: psutil.Process) -> float:
    """CPU seconds of a process, of the children it has reaped (the trials) and of those still running
    (the object store)."""
    t = proc.cpu_times()
    total = t.user + t.system + t.children_user + t.children_system
    for child in proc.children(recursive=True):
        try:
            c = child.cpu_times()
        except psutil.Error:
            continue
        total += c.user + c.system
    return total


def opensage(platform, params: dict, rounds: int, trials: int, parallel: int) -> dict:  # type: ignore[no-untyped-def]
    session = platform.session()
    sm = session.client("sagemaker")
    account = session.client("sts").get_caller_identity()["Account"]
    static = {k: str(v) for k, v in params.items() if k not in TUNED}
    static["num_round"] = str(rounds)
    channels = [
        {
            "ChannelName": channel,
            "ContentType": "text/csv",
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://bench/tuning/{channel}/"}},
        }
        for channel in ("train", "validation")
    ]
    name = f"bench-{uuid.uuid4().hex[:8]}"
    server = psutil.Process(platform.proc.pid)  # the API server; trials are its children, reaped by it
    cpu_before = _cpu(server)
    started = time.perf_counter()
    sm.create_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=name,
        HyperParameterTuningJobConfig={
            "Strategy": "Bayesian",
            "ResourceLimits": {"MaxNumberOfTrainingJobs": trials, "MaxParallelTrainingJobs": parallel},
            "HyperParameterTuningJobObjective": {"Type": "Maximize", "MetricName": "validation:auc"},
            "ParameterRanges": RANGES,
            "RandomSeed": 0,
        },
        TrainingJobDefinition={
            "StaticHyperParameters": static,
            "AlgorithmSpecification": {"TrainingImage": IMAGE, "TrainingInputMode": "File"},
            "RoleArn": f"arn:aws:iam::{account}:role/OpenSageExecutionRole",
            "InputDataConfig": channels,
            "OutputDataConfig": {"S3OutputPath": "s3://bench/tuning-output"},
            "HyperParameterTuningResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1},
            "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
        },
    )
    while True:
        desc = sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
        if desc["HyperParameterTuningJobStatus"] not in ("InProgress", "Stopping"):
            break
        time.sleep(0.25)
    wall = time.perf_counter() - started
    cpu = _cpu(server) - cpu_before
    if desc["HyperParameterTuningJobStatus"] != "Completed":
        raise RuntimeError(f"{name}: {desc.get('FailureReason')}")
    jobs = sm.list_training_jobs_for_hyper_parameter_tuning_job(HyperParameterTuningJobName=name, MaxResults=100)
    spans = [
        (j["TrainingEndTime"] - j["CreationTime"]).total_seconds()
        for j in jobs["TrainingJobSummaries"]
        if j.get("TrainingEndTime")
    ]
    phases: dict[str, list[float]] = {"staging": [], "container": [], "upload": []}
    for j in jobs["TrainingJobSummaries"]:  # where a trial's time goes, from its SecondaryStatusTransitions
        d = sm.describe_training_job(TrainingJobName=j["TrainingJobName"])
        at = {t["Status"]: t["StartTime"] for t in d["SecondaryStatusTransitions"]}
        if "Training" in at and "Uploading" in at:
            phases["staging"].append((at["Training"] - d["CreationTime"]).total_seconds())
            phases["container"].append((at["Uploading"] - at["Training"]).total_seconds())
            phases["upload"].append((d["TrainingEndTime"] - at["Uploading"]).total_seconds())
    summaries = sorted(jobs["TrainingJobSummaries"], key=lambda j: j["CreationTime"])
    ends = sorted(j["TrainingEndTime"] for j in summaries)
    gaps = [  # from a trial's end to the start of the one that takes its place
        (j["CreationTime"] - max(e for e in ends if e <= j["CreationTime"])).total_seconds()
        for j in summaries[parallel:]
        if any(e <= j["CreationTime"] for e in ends)
    ]
    return {
        "gap_ms": 1000 * statistics.median(gaps) if gaps else 0.0,
        "wall_s": wall,
        "cpu_s": cpu,
        "server_s": (desc["HyperParameterTuningEndTime"] - desc["CreationTime"]).total_seconds(),
        "best": desc["BestTrainingJob"]["FinalHyperParameterTuningJobObjectiveMetric"]["Value"],
        "trial_s": statistics.median(spans),
        "completed": desc["TrainingJobStatusCounters"]["Completed"],
        **{f"{k}_s": statistics.median(v) for k, v in phases.items() if v},
    }


def main() -> None:
    from helpers import running_platform

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--out", default=os.environ.get("PERF_ROOT", "/tmp/opensage-bench"))
    a = ap.parse_args()
    out = Path(a.out)
    (out / "data").mkdir(parents=True, exist_ok=True)
    params, rounds = kit_params()
    train, val = make_data(out / "data")
    floors, fulls, ours = [], [], []
    with tempfile.TemporaryDirectory() as tmp, running_platform(Path(tmp) / "home", Path(tmp) / "aws") as platform:
        s3 = platform.session().client("s3")
        s3.create_bucket(Bucket="bench")
        s3.upload_file(str(train), "bench", "tuning/train/train.csv")
        s3.upload_file(str(val), "bench", "tuning/validation/validation.csv")
        for _ in range(a.reps):
            floors.append(floor(train, val, params, rounds, a.trials, a.parallel, "validation"))
            fulls.append(floor(train, val, params, rounds, a.trials, a.parallel, "both"))
            ours.append(opensage(platform, params, rounds, a.trials, a.parallel))
    row = {
        "trials": a.trials,
        "parallel": a.parallel,
        "floor_s": statistics.median(f["wall_s"] for f in floors),
        "floor_best": max(f["best"] for f in floors),
        "floor_both_s": statistics.median(f["wall_s"] for f in fulls),
        "floor_cpu_s": statistics.median(f["cpu_s"] for f in floors),
        "floor_both_cpu_s": statistics.median(f["cpu_s"] for f in fulls),
        "opensage_cpu_s": statistics.median(o["cpu_s"] for o in ours),
        "opensage_s": statistics.median(o["wall_s"] for o in ours),
        "server_s": statistics.median(o["server_s"] for o in ours),
        "opensage_best": max(o["best"] for o in ours),
        "trial_s": statistics.median(o["trial_s"] for o in ours),
        "gap_ms": statistics.median(o["gap_ms"] for o in ours),
        **{k: statistics.median(o[k] for o in ours) for k in ("staging_s", "container_s", "upload_s") if k in ours[0]},
    }
    row["ratio"] = row["opensage_s"] / row["floor_s"]
    row["ratio_both"] = row["opensage_s"] / row["floor_both_s"]
    row["overhead_per_trial_s"] = (row["opensage_s"] - row["floor_s"]) * a.parallel / a.trials
    (out / "results").mkdir(parents=True, exist_ok=True)
    (out / "results" / "tuning_bench.json").write_text(
        json.dumps({"row": row, "floor": floors, "floor_both": fulls, "opensage": ours})
    )
    print(f"\n{ROWS:,} rows (80/20 train/validation), xgboost {params}, num_round {rounds}; medians of {a.reps}\n")
    print(
        "| trials x parallel | floor: Optuna + xgboost (s) | floor, train+validation evals (s) |"
        " OpenSage tuning job, client (s) | same, job record (s) | ratio | ratio to the train+validation floor |"
        " overhead per trial (s) | median trial job (s) | trial end -> next trial (ms) | best AUC floor |"
        " best AUC OpenSage |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    r = row
    print(
        f"| {r['trials']} x {r['parallel']} | {r['floor_s']:.1f} | {r['floor_both_s']:.1f} | {r['opensage_s']:.1f} | "
        f"{r['server_s']:.1f} | {r['ratio']:.2f} | {r['ratio_both']:.2f} | {r['overhead_per_trial_s']:.2f} | "
        f"{r['trial_s']:.2f} | {r['gap_ms']:.0f} | {r['floor_best']:.4f} | {r['opensage_best']:.4f} |"
    )
    print(
        "\nCPU seconds (user + system; they do not depend on what else the machine runs): floor "
        f"{r['floor_cpu_s']:.1f}, floor with train+validation evals {r['floor_both_cpu_s']:.1f}, OpenSage "
        f"(server and trials) {r['opensage_cpu_s']:.1f}; ratio {r['opensage_cpu_s'] / r['floor_cpu_s']:.2f}, "
        f"to the train+validation floor {r['opensage_cpu_s'] / r['floor_both_cpu_s']:.2f}, per trial "
        f"{(r['opensage_cpu_s'] - r['floor_both_cpu_s']) / r['trials']:.2f} s more than that floor"
    )
    if "container_s" in r:
        print("\nA trial job, medians (s): CreationTime -> Training (channels, environment) | Training -> Uploading")
        print("(process start, imports, data read, training) | Uploading -> end (model, metrics, rules)")
        print(f"| {r['staging_s']:.3f} | {r['container_s']:.3f} | {r['upload_s']:.3f} |")


if __name__ == "__main__":
    main()
