"""Built-in algorithms benchmark: Linear Learner and K-Means jobs against scikit-learn in one process.

On the bench kit's bank-marketing-shaped data (1,000,000 rows by default; label first, 59
features), split 80/20 into ``train.csv`` and ``test.csv``, in the same run:

* Linear Learner (``binary_classifier``, the container's defaults but ``epochs``, CSV channels
  ``train`` and ``test``) against scikit-learn's ``LogisticRegression`` (lbfgs, standardized
  features, as Linear Learner standardizes them): wall time and the test set's AUC and accuracy;
* K-Means (``k`` 10, ``mini_batch_size`` 5000, the container's defaults otherwise; ``test``
  channel) against scikit-learn's ``MiniBatchKMeans`` + ``KMeans`` on the same two stages, and
  against plain ``KMeans``: wall time and the test set's mean squared distance (``test:msd``).

scikit-learn runs in a fresh Python process that reads the CSVs (pyarrow) and fits, wall time from
spawn to exit. OpenSage's side is CreateTrainingJob -> Completed as a boto3 client sees it (the
data already in the object store), and the same from the job record; quality from the job's
``FinalMetricDataList``. Both sides use every core of the machine.

Usage: python benchmarks/builtin_algorithms_bench.py [--rows 1000000] [--reps 1] [--epochs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KIT = ROOT.parent / "shared" / "bench"
sys.path.insert(0, str(ROOT / "tests"))

LINEAR_LEARNER = "382416733822.dkr.ecr.us-east-1.amazonaws.com/linear-learner:1"
KMEANS = "382416733822.dkr.ecr.us-east-1.amazonaws.com/kmeans:1"
FEATURES = 59
K = 10

FLOOR = """
import json, sys, time
import numpy as np
import pyarrow.csv as pacsv
from sklearn.metrics import accuracy_score, roc_auc_score

def load(path):
    table = pacsv.read_csv(path, read_options=pacsv.ReadOptions(autogenerate_column_names=True))
    m = np.column_stack([c.to_numpy().astype(np.float32) for c in table.columns])
    return m[:, 1:], m[:, 0]

x, y = load(sys.argv[2])
xt, yt = load(sys.argv[3])
K = int(sys.argv[4])
out = {}
if sys.argv[1] == "logistic":
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=200)).fit(x, y)
    p = model.predict_proba(xt)[:, 1]
    out = {"auc": roc_auc_score(yt, p), "accuracy": accuracy_score(yt, p > 0.5)}
else:
    from sklearn.cluster import KMeans, MiniBatchKMeans
    def msd(centers):
        d = ((xt[:, None, :].astype(np.float64) - centers[None]) ** 2).sum(axis=2)
        return float(d.min(axis=1).mean())
    if sys.argv[1] == "kmeans-two-stage":
        stage = MiniBatchKMeans(n_clusters=10 * K, batch_size=5000, max_iter=1, n_init=1, random_state=0).fit(x)
        weights = np.bincount(stage.labels_, minlength=10 * K).astype(np.float64)
        used = weights > 0
        final = KMeans(n_clusters=K, n_init=10, random_state=0).fit(stage.cluster_centers_[used],
                                                                    sample_weight=weights[used])
    else:
        final = KMeans(n_clusters=K, n_init=1, random_state=0).fit(x)
    out = {"msd": msd(final.cluster_centers_)}
print(json.dumps(out))
"""


def make_split(rows: int, out_dir: Path) -> tuple[Path, Path]:
    full = out_dir / f"bank_{rows}.csv"
    if not full.exists():
        subprocess.run(
            [sys.executable, str(KIT / "gen_data.py"), "--rows", str(rows), "--seed", "42", "--out", str(full)],
            check=True,
            capture_output=True,
        )
    train, test = out_dir / f"bank_{rows}_train.csv", out_dir / f"bank_{rows}_test.csv"
    if not test.exists():
        lines = full.read_text().splitlines(keepends=True)
        cut = int(len(lines) * 0.8)
        train.write_text("".join(lines[:cut]))
        test.write_text("".join(lines[cut:]))
    return train, test


def floor(kind: str, train: Path, test: Path) -> dict:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(FLOOR), kind, str(train), str(test), str(K)],
        check=True,
        capture_output=True,
        text=True,
    )
    return {"wall_s": time.perf_counter() - started, **json.loads(done.stdout.strip().splitlines()[-1])}


def job(platform, image: str, hyperparameters: dict[str, str], prefix: str) -> dict:  # type: ignore[no-untyped-def]
    session = platform.session()
    sm = session.client("sagemaker")
    account = session.client("sts").get_caller_identity()["Account"]
    name = f"bench-{uuid.uuid4().hex[:8]}"
    channels = [
        {
            "ChannelName": channel,
            "ContentType": "text/csv" + (";label_size=1" if "kmeans" in image else ""),  # skip the label
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"{prefix}/{channel}/"}},
        }
        for channel in ("train", "test")
    ]
    started = time.perf_counter()
    sm.create_training_job(
        TrainingJobName=name,
        AlgorithmSpecification={"TrainingImage": image, "TrainingInputMode": "File"},
        RoleArn=f"arn:aws:iam::{account}:role/OpenSageExecutionRole",
        InputDataConfig=channels,
        OutputDataConfig={"S3OutputPath": "s3://bench/output"},
        ResourceConfig={"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 5},
        StoppingCondition={"MaxRuntimeInSeconds": 3600},
        HyperParameters=hyperparameters,
    )
    while True:
        desc = sm.describe_training_job(TrainingJobName=name)
        if desc["TrainingJobStatus"] in ("Completed", "Failed", "Stopped"):
            break
        time.sleep(0.25)
    wall = time.perf_counter() - started
    if desc["TrainingJobStatus"] != "Completed":
        raise RuntimeError(f"{name}: {desc.get('FailureReason')}")
    metrics = {m["MetricName"]: m["Value"] for m in desc.get("FinalMetricDataList", [])}
    server = desc["TrainingEndTime"].timestamp() - desc["CreationTime"].timestamp()
    return {"wall_s": wall, "server_s": server, "metrics": metrics}


def main() -> None:
    from helpers import running_platform

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=5, help="Linear Learner's epochs")
    ap.add_argument("--out", default=os.environ.get("PERF_ROOT", "/tmp/opensage-bench"))
    a = ap.parse_args()
    out = Path(a.out)
    (out / "data").mkdir(parents=True, exist_ok=True)
    train, test = make_split(a.rows, out / "data")
    ll_hps = {"predictor_type": "binary_classifier", "feature_dim": str(FEATURES), "epochs": str(a.epochs)}
    km_hps = {"k": str(K), "feature_dim": str(FEATURES), "mini_batch_size": "5000", "eval_metrics": '["msd"]'}
    cells: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp, running_platform(Path(tmp) / "home", Path(tmp) / "aws") as platform:
        s3 = platform.session().client("s3")
        s3.create_bucket(Bucket="bench")
        for channel, path in (("train", train), ("test", test)):
            s3.upload_file(str(path), "bench", f"data/{channel}/{path.name}")
        for _ in range(a.reps):
            cells.setdefault("ll", []).append(job(platform, LINEAR_LEARNER, ll_hps, "s3://bench/data"))
            cells.setdefault("logistic", []).append(floor("logistic", train, test))
            cells.setdefault("km", []).append(job(platform, KMEANS, km_hps, "s3://bench/data"))
            cells.setdefault("km2", []).append(floor("kmeans-two-stage", train, test))
            cells.setdefault("km1", []).append(floor("kmeans", train, test))

    def med(key: str, field: str) -> float:
        return statistics.median(c[field] if field in c else c["metrics"][field] for c in cells[key])

    rows = [
        ("Linear Learner job", med("ll", "wall_s"), med("ll", "server_s"),
         f"AUC {med('ll', 'test:roc_auc_score'):.4f}, accuracy {med('ll', 'test:binary_classification_accuracy'):.4f}"),
        ("scikit-learn LogisticRegression (process)", med("logistic", "wall_s"), None,
         f"AUC {med('logistic', 'auc'):.4f}, accuracy {med('logistic', 'accuracy'):.4f}"),
        ("K-Means job", med("km", "wall_s"), med("km", "server_s"), f"test msd {med('km', 'test:msd'):.4f}"),
        ("scikit-learn MiniBatchKMeans + KMeans (process)", med("km2", "wall_s"), None,
         f"test msd {med('km2', 'msd'):.4f}"),
        ("scikit-learn KMeans (process)", med("km1", "wall_s"), None, f"test msd {med('km1', 'msd'):.4f}"),
    ]
    (out / "results").mkdir(parents=True, exist_ok=True)
    (out / "results" / "builtin_algorithms_bench.json").write_text(json.dumps(cells, indent=2, default=str))
    print(f"\n{a.rows:,} rows (80 % train, 20 % test), {FEATURES} features; Linear Learner epochs {a.epochs}, "
          f"K-Means k {K}; medians of {a.reps} run(s), {os.cpu_count()} cores\n")
    print("| what | wall (s) | job record Create->End (s) | quality on the test set |")
    print("|---|---:|---:|---|")
    for what, wall, server, quality in rows:
        print(f"| {what} | {wall:.2f} | {'' if server is None else f'{server:.2f}'} | {quality} |")
    ll, lr = med("ll", "wall_s"), med("logistic", "wall_s")
    km, km2 = med("km", "wall_s"), med("km2", "wall_s")
    print(f"\nLinear Learner / LogisticRegression wall time: {ll / lr:.2f}x; "
          f"K-Means / the same two stages in scikit-learn: {km / km2:.2f}x")


if __name__ == "__main__":
    main()
