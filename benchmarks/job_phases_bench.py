"""Where a seed-sized job's time goes: fit()/run() wall time beside the job's own phases and the same work raw.

Each case runs through the unchanged SageMaker Python SDK v2 (a child process set up as by
``eval "$(opensage env)"``, the SDK imported before the clock starts) against a platform this
benchmark starts:

* ``bank``: the bank tutorial, built-in XGBoost 1.7-1 (41,188 rows x 59 features, 100 rounds, its
  hyperparameters; ``tree_method`` auto, which the 1.7-1 image resolves to ``exact`` as XGBoost 1.x did);
* ``digits``: scikit-learn's ``load_digits`` (1,797 x 64) with the built-in XGBoost, ``multi:softmax``;
* ``iris``: iris in script mode (SKLearn estimator, a LogisticRegression), no requirements.txt;
* ``iris-req``: the same with a requirements.txt whose environment is already cached (built once
  before the measured runs);
* ``processing``: a small SKLearnProcessor job (read iris, split it, write train/test);
* ``bank-nthread4`` (not run unless asked for): the bank job with ``nthread`` set to the instance's
  4 vCPUs, which the image used by default before it capped threads at the usable cores.

For each: fit()/run() wall time, and from the job's record (CreationTime, SecondaryStatusTransitions,
TrainingEndTime / ProcessingStartTime, ProcessingEndTime) and its log: queue (Create -> Downloading),
download (Downloading -> Training), start (Training -> the container's first own line: process spawn,
interpreter, toolkit), imports (-> the algorithm's first step), algorithm (the algorithm's own work:
for the built-in XGBoost, reading the data to the model stored, as timed by the log events' arrival,
about 50 ms resolution; for scripts, their own printed time stamps around fit and save), exit (the
algorithm's end -> Uploading), upload (-> the end). "platform part" is the job's Create -> End
minus the algorithm. "raw" is the same work in one fresh Python process (spawn -> exit), with its
own algorithm part, timed the same way.

The SDK sleeps 5 s before its first DescribeTrainingJob and then, with logs, describes every 30 s
(processing jobs: 10 s, then every 30 s); a job that is Completed by the first poll returns in about
5 s plus the SDK's own work before CreateTrainingJob ("SDK pre" in the table).

Usage: python benchmarks/job_phases_bench.py [--reps 1] [--cases bank digits iris iris-req processing] [--label L]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

BUCKET = "bench-phases"
CASES = ("bank", "digits", "iris", "iris-req", "processing", "bank-nthread4")
DEFAULT_CASES = CASES[:5]
SKLEARN_IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"
TRAINING_GROUP, PROCESSING_GROUP = "/aws/sagemaker/TrainingJobs", "/aws/sagemaker/ProcessingJobs"
# The bank tutorial's hyperparameters (no tree_method: the image's default applies).
BANK_HPS = {
    "max_depth": 5,
    "eta": 0.2,
    "gamma": 4,
    "min_child_weight": 6,
    "subsample": 0.8,
    "objective": "binary:logistic",
    "num_round": 100,
}
DIGITS_HPS = {"max_depth": 5, "eta": 0.3, "objective": "multi:softmax", "num_class": 10, "num_round": 50}
XGBOOST_CASES = ("bank", "digits", "bank-nthread4")
# Lines of the built-in XGBoost's log that bound its phases.
XGB_FIRST, XGB_ALGORITHM, XGB_STORED = "Single node training.", "File path ", "Stored trained model"

IRIS_TRAIN = """\
import time; print(f"PHASE start {time.time():.6f}", flush=True)
import os
import joblib
import pandas as pd
from sklearn.linear_model import LogisticRegression
print(f"PHASE imported {time.time():.6f}", flush=True)
data = pd.read_csv(os.path.join(os.environ["SM_CHANNEL_TRAIN"], "iris.csv"), header=None)
model = LogisticRegression(max_iter=500).fit(data.iloc[:, 1:], data.iloc[:, 0])
joblib.dump(model, os.path.join(os.environ["SM_MODEL_DIR"], "model.joblib"))
print(f"accuracy={model.score(data.iloc[:, 1:], data.iloc[:, 0]):.3f}")
print(f"PHASE done {time.time():.6f}", flush=True)
"""
PREPROCESS = """\
import time; print(f"PHASE start {time.time():.6f}", flush=True)
import argparse, glob, os
import pandas as pd
from sklearn.model_selection import train_test_split
print(f"PHASE imported {time.time():.6f}", flush=True)
ap = argparse.ArgumentParser()
ap.add_argument("--input", default="/opt/ml/processing/input")
ap.add_argument("--output", default="/opt/ml/processing")
a = ap.parse_args()
data = pd.concat(pd.read_csv(f, header=None) for f in sorted(glob.glob(os.path.join(a.input, "*.csv"))))
train, test = train_test_split(data, test_size=0.25, random_state=0)
for name, part in (("train", train), ("test", test)):
    os.makedirs(os.path.join(a.output, name), exist_ok=True)
    part.to_csv(os.path.join(a.output, name, f"{name}.csv"), header=False, index=False)
print("rows", len(train), len(test))
print(f"PHASE done {time.time():.6f}", flush=True)
"""
RAW_XGB = """\
import time; T0 = time.time()
import json, sys
sys.modules.setdefault("sklearn", None)  # as the image does: xgboost's scikit-learn API is not used
import numpy as np, pyarrow.csv as pacsv, xgboost as xgb
T1 = time.time()
params = json.loads(sys.argv[3]); rounds = int(params.pop("num_round"))
table = pacsv.read_csv(sys.argv[1], read_options=pacsv.ReadOptions(autogenerate_column_names=True))
a = np.column_stack([c.to_numpy() for c in table.columns]).astype(np.float32)
d = xgb.DMatrix(a[:, 1:], label=a[:, 0], nthread=params["nthread"])
booster = xgb.train(params, d, rounds, evals=[(d, "train")], verbose_eval=False)
booster.save_model(sys.argv[2])
print(f"PHASE start {T0:.6f}\\nPHASE imported {T1:.6f}\\nPHASE done {time.time():.6f}")
"""


# --- inside the SDK child process -------------------------------------------------------------------


def sdk_case(case: str, spec: dict) -> dict:
    """Run one case through the SDK (in a shell set up by ``opensage env``); fit()/run() wall time."""
    import sagemaker

    session = sagemaker.Session()
    role = sagemaker.get_execution_role()
    if case == "processing":
        from sagemaker.processing import ProcessingInput, ProcessingOutput
        from sagemaker.sklearn.processing import SKLearnProcessor

        processor = SKLearnProcessor(
            framework_version="1.2-1", role=role, instance_type="ml.m5.xlarge", instance_count=1
        )
        started, wall_start = time.time(), time.perf_counter()
        processor.run(
            code=spec["code"],
            inputs=[ProcessingInput(source=spec["train"], destination="/opt/ml/processing/input")],
            outputs=[
                ProcessingOutput(output_name="train", source="/opt/ml/processing/train"),
                ProcessingOutput(output_name="test", source="/opt/ml/processing/test"),
            ],
        )
        return {"wall": time.perf_counter() - wall_start, "started": started, "job": processor.latest_job.job_name}
    if case in XGBOOST_CASES:
        from sagemaker import image_uris
        from sagemaker.estimator import Estimator
        from sagemaker.inputs import TrainingInput

        image = image_uris.retrieve("xgboost", session.boto_region_name, "1.7-1")
        est = Estimator(
            image,
            role,
            instance_count=1,
            instance_type="ml.m4.xlarge",
            output_path=spec["output"],
            sagemaker_session=session,
        )
        est.set_hyperparameters(**spec["hyperparameters"])
        inputs: Any = {"train": TrainingInput(spec["train"], content_type="csv")}
    else:
        from sagemaker.sklearn import SKLearn

        est = SKLearn(
            entry_point="train.py",
            source_dir=spec["source_dir"],
            framework_version="1.2-1",
            py_version="py3",
            instance_type="ml.m5.large",
            role=role,
            output_path=spec["output"],
            sagemaker_session=session,
        )
        inputs = {"train": spec["train"]}
    started, wall_start = time.time(), time.perf_counter()
    est.fit(inputs, logs=True)
    return {"wall": time.perf_counter() - wall_start, "started": started, "job": est.latest_training_job.name}


# --- the job's own phases ---------------------------------------------------------------------------


def _events(logs: Any, group: str, job: str) -> list[tuple[float, str]]:
    streams = logs.describe_log_streams(logGroupName=group, logStreamNamePrefix=job)["logStreams"]
    out: list[tuple[float, str]] = []
    for stream in streams:
        kwargs = {"logGroupName": group, "logStreamName": stream["logStreamName"], "startFromHead": True}
        while True:
            page = logs.get_log_events(**kwargs)
            out += [(e["timestamp"] / 1000, e["message"]) for e in page["events"]]
            if not page["events"]:
                break
            kwargs["nextToken"] = page["nextForwardToken"]
    return sorted(out, key=lambda e: e[0])


def _stamps(lines: list[str]) -> dict[str, float]:
    """The ``PHASE <name> <epoch>`` lines a script printed."""
    out = {}
    for line in lines:
        parts = line.split()
        if len(parts) == 3 and parts[0] == "PHASE":
            out.setdefault(parts[1], float(parts[2]))
    return out


def _first(events: list[tuple[float, str]], text: str) -> float:
    """When the first line containing ``text`` reached the log."""
    for t, message in events:
        if text in message:
            return t
    raise SystemExit(f"no log line contains {text!r}")


def training_phases(session: Any, job: str, kind: str) -> dict[str, float]:
    desc = session.client("sagemaker").describe_training_job(TrainingJobName=job)
    if desc["TrainingJobStatus"] != "Completed":
        raise SystemExit(f"{job}: {desc['TrainingJobStatus']}: {desc.get('FailureReason')}")
    at = {t["Status"]: t["StartTime"].timestamp() for t in desc["SecondaryStatusTransitions"]}
    created, end = desc["CreationTime"].timestamp(), desc["TrainingEndTime"].timestamp()
    events = _events(session.client("logs"), TRAINING_GROUP, job)
    if kind == "xgboost":
        first, begin, done = (_first(events, p) for p in (XGB_FIRST, XGB_ALGORITHM, XGB_STORED))
    else:
        stamps = _stamps([m for _, m in events])
        first, begin, done = stamps["start"], stamps["imported"], stamps["done"]
    return {
        "created": created,
        "queue": at["Downloading"] - created,
        "download": at["Training"] - at["Downloading"],
        "start": first - at["Training"],
        "imports": begin - first,
        "algorithm": done - begin,
        "exit": at["Uploading"] - done,
        "upload": end - at["Uploading"],
        "job": end - created,
    }


def processing_phases(session: Any, job: str) -> dict[str, float]:
    desc = session.client("sagemaker").describe_processing_job(ProcessingJobName=job)
    if desc["ProcessingJobStatus"] != "Completed":
        raise SystemExit(f"{job}: {desc['ProcessingJobStatus']}: {desc.get('FailureReason')}")
    created, started = desc["CreationTime"].timestamp(), desc["ProcessingStartTime"].timestamp()
    end = desc["ProcessingEndTime"].timestamp()
    events = _events(session.client("logs"), PROCESSING_GROUP, job)
    stamps = _stamps([m for _, m in events])
    downloaded = _first(events, "Downloaded")
    return {
        "created": created,
        "queue": downloaded - created,  # Create -> the platform's download report (includes the download)
        "download": started - downloaded,  # the rest, to the container's start
        "start": stamps["start"] - started,
        "imports": stamps["imported"] - stamps["start"],
        "algorithm": stamps["done"] - stamps["imported"],
        "exit": 0.0,
        "upload": end - stamps["done"],  # exit and the outputs' upload
        "job": end - created,
    }


# --- raw: the same work in one process --------------------------------------------------------------


def raw_run(argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> dict[str, float]:
    started = time.perf_counter()
    result = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    total = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"raw run failed: {result.stderr[-2000:]}")
    stamps = _stamps(result.stdout.splitlines())
    return {"raw": total, "raw_algorithm": stamps["done"] - stamps["imported"]}


def raw_case(case: str, data: dict[str, Path], work: Path) -> dict[str, float]:
    from opensage.compute import cores

    if case in XGBOOST_CASES:
        # what the 1.7-1 job runs: exact; the instance's 4 vCPUs up to the usable cores, or the nthread given
        threads = 4 if case == "bank-nthread4" else min(4, cores.usable_cores())
        params = {**(DIGITS_HPS if case == "digits" else BANK_HPS), "tree_method": "exact", "nthread": threads}
        source = data["digits" if case == "digits" else "bank"]
        argv = [sys.executable, "-c", RAW_XGB, str(source), str(work / f"{case}.ubj"), json.dumps(params)]
        return raw_run(argv)
    if case == "processing":
        out = work / "raw-processing"
        script = work / "preprocess.py"
        return raw_run([sys.executable, str(script), "--input", str(data["iris"].parent), "--output", str(out)])
    model_dir = work / "raw-model"
    model_dir.mkdir(exist_ok=True)
    env = {**os.environ, "SM_CHANNEL_TRAIN": str(data["iris"].parent), "SM_MODEL_DIR": str(model_dir)}
    return raw_run([sys.executable, str(work / "iris" / "train.py")], env=env, cwd=work / "iris")


# --- the parent -------------------------------------------------------------------------------------


def make_data(root: Path) -> dict[str, Path]:
    from sklearn.datasets import load_digits, load_iris
    from training_bench import make_data as bank_data

    (root / "digits").mkdir(parents=True, exist_ok=True)
    (root / "iris").mkdir(parents=True, exist_ok=True)
    paths = {"bank": bank_data(41188, root), "digits": root / "digits/digits.csv", "iris": root / "iris/iris.csv"}
    for name, loader in (("digits", load_digits), ("iris", load_iris)):
        if not paths[name].exists():
            x, y = loader(return_X_y=True)
            rows = (",".join(f"{v:g}" for v in [label, *row]) for label, row in zip(y, x, strict=True))
            paths[name].write_text("\n".join(rows))
    return paths


def _tar(source: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(source.iterdir()):
            tar.add(path, arcname=path.name)
    return buffer.getvalue()


def warm_environment(session: Any, source: Path) -> None:
    """Build the requirements.txt environment once (straight through boto3), so that the measured runs use it."""
    s3, sm = session.client("s3"), session.client("sagemaker")
    account = session.client("sts").get_caller_identity()["Account"]
    name = f"warm-{uuid.uuid4().hex[:8]}"
    s3.put_object(Bucket=BUCKET, Key=f"{name}/sourcedir.tar.gz", Body=_tar(source))
    sm.create_training_job(
        TrainingJobName=name,
        AlgorithmSpecification={"TrainingImage": SKLEARN_IMAGE, "TrainingInputMode": "File"},
        RoleArn=f"arn:aws:iam::{account}:role/OpenSageExecutionRole",
        HyperParameters={
            "sagemaker_program": '"train.py"',
            "sagemaker_submit_directory": f'"s3://{BUCKET}/{name}/sourcedir.tar.gz"',
        },
        InputDataConfig=[
            {
                "ChannelName": "train",
                "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/data/iris/"}},
            }
        ],
        OutputDataConfig={"S3OutputPath": f"s3://{BUCKET}/warm"},
        ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 5},
        StoppingCondition={"MaxRuntimeInSeconds": 600},
    )
    while (desc := sm.describe_training_job(TrainingJobName=name))["TrainingJobStatus"] == "InProgress":
        time.sleep(0.2)
    if desc["TrainingJobStatus"] != "Completed":
        raise SystemExit(f"warming the environment failed: {desc.get('FailureReason')}")


def run_sdk(platform: Any, case: str, spec: dict, work: Path) -> dict:
    result = subprocess.run(
        [sys.executable, __file__, "--sdk", case, json.dumps(spec)],
        env=platform.shell_env(),
        capture_output=True,
        text=True,
        cwd=work,
        timeout=900,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    if result.returncode != 0 or not lines:
        raise SystemExit(f"SDK case {case} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def measure(platform: Any, case: str, spec: dict, data: dict[str, Path], work: Path) -> dict[str, float]:
    session = platform.session()
    sdk = run_sdk(platform, case, spec, work)
    if case == "processing":
        phases = processing_phases(session, sdk["job"])
    else:
        phases = training_phases(session, sdk["job"], "xgboost" if case in XGBOOST_CASES else "script")
    row = {"wall": sdk["wall"], "sdk_pre": phases.pop("created") - sdk["started"], **phases}
    row.update(raw_case(case, data, work))
    row["platform"] = row["job"] - row["algorithm"]
    row["over_raw"] = row["job"] - row["raw"]
    return row


COLUMNS = [
    ("wall", "fit()/run() wall"),
    ("sdk_pre", "SDK pre"),
    ("job", "job Create->End"),
    ("queue", "queue"),
    ("download", "download"),
    ("start", "start"),
    ("imports", "imports"),
    ("algorithm", "algorithm"),
    ("exit", "exit"),
    ("upload", "upload"),
    ("platform", "platform part"),
    ("raw", "raw process"),
    ("raw_algorithm", "raw algorithm"),
    ("over_raw", "job - raw"),
]


def print_table(rows: dict[str, dict[str, float]], label: str, reps: int) -> None:
    print(f"\n{label}: seconds, medians of {reps} run(s)\n")
    print("| case | " + " | ".join(title for _, title in COLUMNS) + " |")
    print("|---|" + "---:|" * len(COLUMNS))
    for case, row in rows.items():
        print(f"| {case} | " + " | ".join(f"{row[key]:.2f}" for key, _ in COLUMNS) + " |")


def main() -> None:
    from helpers import running_platform

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--cases", nargs="+", choices=CASES, default=list(DEFAULT_CASES))
    ap.add_argument("--label", default="OpenSage")
    ap.add_argument("--out", default=os.environ.get("PERF_ROOT", "/tmp/opensage-bench"))
    ap.add_argument("--sdk", nargs=2, metavar=("CASE", "SPEC"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.sdk:
        print("RESULT " + json.dumps(sdk_case(a.sdk[0], json.loads(a.sdk[1]))), flush=True)
        return
    out = Path(a.out)
    data = make_data(out / "data")
    results: dict[str, list[dict[str, float]]] = {case: [] for case in a.cases}
    with tempfile.TemporaryDirectory() as tmp, running_platform(Path(tmp) / "home", Path(tmp) / "aws") as platform:
        work = Path(tmp) / "work"
        for name, files in {
            "iris": {"train.py": IRIS_TRAIN},
            "iris-req": {"train.py": IRIS_TRAIN, "requirements.txt": f"# {uuid.uuid4().hex}\ntabulate>=0.9\n"},
        }.items():
            (work / name).mkdir(parents=True)
            for file, text in files.items():
                (work / name / file).write_text(text)
        (work / "preprocess.py").write_text(PREPROCESS)
        session = platform.session()
        s3 = session.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        for name in ("bank", "digits", "iris"):
            s3.upload_file(str(data[name]), BUCKET, f"data/{name}/{data[name].name}")
        if "iris-req" in a.cases:
            warm_environment(session, work / "iris-req")
        specs = {
            "bank": {"hyperparameters": BANK_HPS, "train": f"s3://{BUCKET}/data/bank/"},
            "bank-nthread4": {"hyperparameters": {**BANK_HPS, "nthread": 4}, "train": f"s3://{BUCKET}/data/bank/"},
            "digits": {"hyperparameters": DIGITS_HPS, "train": f"s3://{BUCKET}/data/digits/"},
            "iris": {"source_dir": str(work / "iris"), "train": f"s3://{BUCKET}/data/iris/"},
            "iris-req": {"source_dir": str(work / "iris-req"), "train": f"s3://{BUCKET}/data/iris/"},
            "processing": {"code": str(work / "preprocess.py"), "train": f"s3://{BUCKET}/data/iris/"},
        }
        for _ in range(a.reps):
            for case in a.cases:
                spec = {**specs[case], "output": f"s3://{BUCKET}/output"}
                results[case].append(measure(platform, case, spec, data, work))
    medians = {case: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for case, runs in results.items()}
    (out / "results").mkdir(parents=True, exist_ok=True)
    (out / "results" / f"job_phases_bench-{a.label}.json").write_text(json.dumps(results, indent=2))
    print_table(medians, a.label, a.reps)


if __name__ == "__main__":
    main()
