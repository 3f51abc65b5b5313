"""Script-mode benchmark: the cost of a job's Python environment, and script-mode endpoints' throughput.

In one run, against one platform:

* environments: CreateTrainingJob -> Completed for a scikit-learn script-mode job with no
  requirements.txt, with a requirements.txt not seen before (a new environment is built with uv; uv's
  own download cache may be warm), and with the same requirements.txt again (the cached environment);
  plus the environment build time the job logs.
* endpoints: the same XGBoost model behind the built-in XGBoost image and behind the XGBoost image in
  script mode (a user inference.py whose model_fn loads the booster, the rest defaults), and a
  scikit-learn model behind a script-mode inference.py: SigV4-signed InvokeEndpoint, 1-row CSV, with
  wrk at concurrency 1 and 8: requests/s and p50/p99.

Usage: python benchmarks/script_mode_bench.py [--reps 3] [--duration 5]
"""

from __future__ import annotations

import argparse
import io
import re
import statistics
import sys
import tarfile
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

REGISTRY = "683313688378.dkr.ecr.us-east-1.amazonaws.com"
SKLEARN = f"{REGISTRY}/sagemaker-scikit-learn:1.2-1-cpu-py3"
XGBOOST = f"{REGISTRY}/sagemaker-xgboost:1.7-1"
BUCKET = "bench-script"
TRAIN = "import os\nimport numpy\nprint('trained')\nopen(os.path.join(os.environ['SM_MODEL_DIR'], 'm'), 'w')\n"
XGB_INFERENCE = (
    "import os, xgboost as xgb\n"
    "def model_fn(model_dir):\n"
    "    booster = xgb.Booster()\n"
    "    booster.load_model(os.path.join(model_dir, 'xgboost-model'))\n"
    "    return booster\n"
)
SKLEARN_INFERENCE = (
    "import os, joblib\n"
    "def model_fn(model_dir):\n"
    "    return joblib.load(os.path.join(model_dir, 'model.joblib'))\n"
    "def predict_fn(data, model):\n"
    "    return model.predict_proba(data)[:, 1]\n"
)


def _tar(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _role(session) -> str:  # type: ignore[no-untyped-def]
    account = session.client("sts").get_caller_identity()["Account"]
    return f"arn:aws:iam::{account}:role/OpenSageExecutionRole"


def job(session, files: dict[str, str]) -> tuple[float, float | None]:  # type: ignore[no-untyped-def]
    """Create -> Completed wall seconds, and the environment build time the job logged (if any)."""
    s3, sm, logs = session.client("s3"), session.client("sagemaker"), session.client("logs")
    name = f"env-{uuid.uuid4().hex[:8]}"
    s3.put_object(Bucket=BUCKET, Key=f"{name}/sourcedir.tar.gz", Body=_tar({k: v.encode() for k, v in files.items()}))
    started = time.perf_counter()
    sm.create_training_job(
        TrainingJobName=name,
        AlgorithmSpecification={"TrainingImage": SKLEARN, "TrainingInputMode": "File"},
        RoleArn=_role(session),
        HyperParameters={
            "sagemaker_program": '"train.py"',
            "sagemaker_submit_directory": f'"s3://{BUCKET}/{name}/sourcedir.tar.gz"',
        },
        OutputDataConfig={"S3OutputPath": f"s3://{BUCKET}/out"},
        ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 5},
        StoppingCondition={"MaxRuntimeInSeconds": 600},
    )
    while (desc := sm.describe_training_job(TrainingJobName=name))["TrainingJobStatus"] == "InProgress":
        time.sleep(0.05)
    wall = time.perf_counter() - started
    if desc["TrainingJobStatus"] != "Completed":
        raise SystemExit(f"job {name} ended {desc['TrainingJobStatus']}: {desc.get('FailureReason')}")
    group = "/aws/sagemaker/TrainingJobs"
    stream = logs.describe_log_streams(logGroupName=group, logStreamNamePrefix=name)["logStreams"][0]
    events = logs.get_log_events(logGroupName=group, logStreamName=stream["logStreamName"], startFromHead=True)
    built = [re.search(r"Environment ready in ([\d.]+) s", e["message"]) for e in events["events"]]
    seconds = [float(m.group(1)) for m in built if m]
    return wall, (seconds[0] if seconds else None)


def environments(session, reps: int) -> list[dict]:  # type: ignore[no-untyped-def]
    rows = []
    plain = [job(session, {"train.py": TRAIN})[0] for _ in range(reps)]
    rows.append({"case": "no requirements.txt", "wall": statistics.median(plain), "build": None})
    cold, warm, builds = [], [], []
    for _ in range(reps):
        requirements = f"# {uuid.uuid4().hex}\ntabulate>=0.9\n"  # a new hash: a new environment
        wall, build = job(session, {"train.py": TRAIN, "requirements.txt": requirements})
        cold.append(wall)
        builds.append(build or 0.0)
        warm.append(job(session, {"train.py": TRAIN, "requirements.txt": requirements})[0])
    rows.append(
        {
            "case": "new requirements.txt (environment built)",
            "wall": statistics.median(cold),
            "build": statistics.median(builds),
        }
    )
    rows.append({"case": "same requirements.txt again (cached)", "wall": statistics.median(warm), "build": None})
    return rows


def endpoint(session, name: str, image: str, files: dict[str, bytes], env: dict[str, str]) -> float:  # type: ignore[no-untyped-def]
    s3, sm = session.client("s3"), session.client("sagemaker")
    s3.put_object(Bucket=BUCKET, Key=f"models/{name}.tar.gz", Body=_tar(files))
    sm.create_model(
        ModelName=name,
        PrimaryContainer={"Image": image, "ModelDataUrl": f"s3://{BUCKET}/models/{name}.tar.gz", "Environment": env},
        ExecutionRoleArn=_role(session),
    )
    sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {"VariantName": "v", "ModelName": name, "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}
        ],
    )
    started = time.perf_counter()
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    while (desc := sm.describe_endpoint(EndpointName=name))["EndpointStatus"] == "Creating":
        time.sleep(0.05)
    if desc["EndpointStatus"] != "InService":
        raise SystemExit(f"endpoint {name}: {desc.get('FailureReason')}")
    return time.perf_counter() - started


def main() -> None:
    import joblib
    import numpy as np
    import xgboost as xgb
    from signed_load import sign, wrk
    from sklearn.linear_model import LogisticRegression

    from helpers import running_platform

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 8)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 4}, xgb.DMatrix(x, label=y), 50)
    with tempfile.TemporaryDirectory() as tmp, running_platform(Path(tmp) / "home", Path(tmp) / "aws") as p:
        session = p.session()
        session.client("s3").create_bucket(Bucket=BUCKET)
        envs = environments(session, a.reps)
        booster.save_model(f"{tmp}/xgboost-model.ubj")
        xgb_model = Path(f"{tmp}/xgboost-model.ubj").read_bytes()
        joblib.dump(LogisticRegression().fit(x, y), f"{tmp}/model.joblib")
        cases = {
            "built-in XGBoost": (XGBOOST, {"xgboost-model": xgb_model}, {}),
            "XGBoost, script mode (model_fn)": (
                XGBOOST,
                {"xgboost-model": xgb_model, "code/inference.py": XGB_INFERENCE.encode()},
                {"SAGEMAKER_PROGRAM": "inference.py", "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code"},
            ),
            "scikit-learn, script mode": (
                SKLEARN,
                {
                    "model.joblib": Path(f"{tmp}/model.joblib").read_bytes(),
                    "code/inference.py": SKLEARN_INFERENCE.encode(),
                },
                {"SAGEMAKER_PROGRAM": "inference.py", "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code"},
            ),
        }
        credentials = session.get_credentials()
        key = (credentials.access_key, credentials.secret_key)
        body = ",".join(f"{v:.4f}" for v in x[0]).encode()
        serving = []
        for label, (image, files, env) in cases.items():
            name = f"ep-{uuid.uuid4().hex[:6]}"
            ready = endpoint(session, name, image, files, env)
            url = f"{p.api_url}/endpoints/{name}/invocations"
            signed = sign(url, body, {"Content-Type": "text/csv", "Accept": "text/csv"}, "sagemaker", key)
            for concurrency in (1, 8):
                runs = [wrk(signed, concurrency, a.duration) for _ in range(a.reps)]
                best = sorted(runs, key=lambda r: r["rps"])[len(runs) // 2]
                serving.append(
                    {
                        "case": label,
                        "c": concurrency,
                        "rps": best["rps"],
                        "p50": best["p50_us"] / 1000,
                        "p99": best["p99_us"] / 1000,
                        "errors": sum(r["errors"] for r in runs),
                        "ready": ready,
                    }
                )
    print(f"\nScript-mode jobs (medians of {a.reps}): CreateTrainingJob -> Completed\n")
    print("| case | Create -> Completed (s) | environment build (s) |")
    print("|---|---:|---:|")
    for r in envs:
        build = "" if r["build"] is None else f"{r['build']:.2f}"
        print(f"| {r['case']} | {r['wall']:.2f} | {build} |")
    print(f"\nEndpoints, 1-row CSV, wrk {a.duration} s x {a.reps} (median run)\n")
    print("| endpoint | CreateEndpoint -> InService (s) | concurrency | req/s | p50 ms | p99 ms | errors |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in serving:
        print(
            f"| {r['case']} | {r['ready']:.2f} | {r['c']} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | "
            f"{r['errors']} |"
        )


if __name__ == "__main__":
    main()
