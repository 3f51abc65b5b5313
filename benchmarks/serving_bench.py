"""Serving benchmark: OpenSage InvokeEndpoint against the bench kit's anchors, same model, same run.

Measured, for 1-row and 100-row CSV bodies at concurrency 1, 8 and 64 (wrk, one thread):
* raw in-process predict (xgboost ``inplace_predict`` on the parsed rows, median per call);
* the kit's anchors (thin ASGI app under uvicorn with 1 and 2 workers, `mlflow models serve`, Ray
  Serve, ... as given by --anchors; their venvs come from the kit's setup_envs.sh);
* OpenSage: the same model behind an endpoint with 1 and with 2 instances, requests SigV4-signed
  once and replayed (signed_load.py), so every request goes through signature verification, the
  router and a model server.
Also: CreateEndpoint -> InService time and the memory of each extra model-server instance.

Usage: PERF_ROOT=/tmp/opensage-bench python benchmarks/serving_bench.py [--anchors thin_uvicorn_w1 ...]
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
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
KIT = HERE.parent.parent / "shared" / "bench"
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from signed_load import sign, wrk  # noqa: E402

from helpers import running_platform  # noqa: E402

IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
CONCURRENCY = (1, 8, 64)


def prepare(root: Path) -> tuple[Path, Path]:
    data, models = root / "data", root / "models"
    data.mkdir(parents=True, exist_ok=True)
    models.mkdir(parents=True, exist_ok=True)
    csv, model = data / "bank_41k.csv", models / "xgb_41k.ubj"
    if not (data / "body_1.csv").exists():
        subprocess.run(
            [
                sys.executable,
                str(KIT / "gen_data.py"),
                "--rows",
                "41188",
                "--seed",
                "42",
                "--out",
                str(csv),
                "--bodies",
            ],
            check=True,
            capture_output=True,
        )
    if not model.exists():
        subprocess.run(
            [
                sys.executable,
                str(KIT / "train_bench.py"),
                "--data",
                str(csv),
                "--reps",
                "1",
                "--model",
                str(model),
                "--out",
                str(root / "results" / "train_41k.json"),
            ],
            check=True,
            capture_output=True,
            env={**os.environ, "PERF_ROOT": str(root)},
        )
    return data, model


def raw_inprocess(data: Path, model: Path) -> dict[int, float]:
    import numpy as np
    import xgboost as xgb

    booster = xgb.Booster()
    booster.load_model(str(model))
    out = {}
    for rows in (1, 100):
        text = (data / f"body_{rows}.csv").read_bytes()
        times = []
        for _ in range(300):
            t = time.perf_counter()
            x = np.loadtxt(io.BytesIO(text), delimiter=",", ndmin=2, dtype=np.float32)
            booster.inplace_predict(x)
            times.append(time.perf_counter() - t)
        out[rows] = statistics.median(times) * 1000
    return out


def anchors(names: list[str], reps: int, duration: int, root: Path) -> dict[str, dict]:
    if not names:
        return {}
    mlflow_python = root / "envs" / "mlflow" / "bin" / "python"
    if any(n.startswith("mlflow") for n in names) and mlflow_python.exists():
        # the kit's MLflow anchor serves a model logged by its own script
        subprocess.run([str(mlflow_python), str(KIT / "servers" / "mlflow_log.py")], check=False,
                       env={**os.environ, "PERF_ROOT": str(root)}, capture_output=True)
    subprocess.run(
        [
            sys.executable,
            str(KIT / "serve_bench.py"),
            "--servers",
            *names,
            "--reps",
            str(reps),
            "--duration",
            str(duration),
            "--concurrency",
            *map(str, CONCURRENCY),
        ],
        env={**os.environ, "PERF_ROOT": str(root)},
        check=False,
    )
    found = {}
    for name in names:
        path = root / "results" / f"serve_{name}.json"
        if path.exists():
            found[name] = json.loads(path.read_text())
    return found


def _tar(model: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(model, arcname="xgboost-model")
    return buf.getvalue()


def opensage(data: Path, model: Path, reps: int, duration: int) -> dict:
    results: dict = {"load": {}, "create_to_inservice_s": {}, "instance_rss_mb": []}
    with tempfile.TemporaryDirectory() as tmp, running_platform(Path(tmp) / "home", Path(tmp) / "aws") as p:
        session = p.session()
        s3, sm = session.client("s3"), session.client("sagemaker")
        s3.create_bucket(Bucket="bench")
        s3.put_object(Bucket="bench", Key="model.tar.gz", Body=_tar(model))
        account = session.client("sts").get_caller_identity()["Account"]
        sm.create_model(
            ModelName="bench",
            PrimaryContainer={"Image": IMAGE, "ModelDataUrl": "s3://bench/model.tar.gz"},
            ExecutionRoleArn=f"arn:aws:iam::{account}:role/OpenSageExecutionRole",
        )
        key = tuple(
            (
                Path(p.env["AWS_SHARED_CREDENTIALS_FILE"])
                .read_text()
                .split("[opensage]", 1)[1]
                .strip()
                .splitlines()[i]
                .split(" = ", 1)[1]
            )
            for i in (0, 1)
        )
        for instances in (1, 2):
            name = f"bench-{instances}"
            sm.create_endpoint_config(
                EndpointConfigName=name,
                ProductionVariants=[
                    {
                        "VariantName": "AllTraffic",
                        "ModelName": "bench",
                        "InitialInstanceCount": instances,
                        "InstanceType": "ml.m5.large",
                    }
                ],
            )
            started = time.perf_counter()
            sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
            while sm.describe_endpoint(EndpointName=name)["EndpointStatus"] == "Creating":
                time.sleep(0.02)
            results["create_to_inservice_s"][instances] = time.perf_counter() - started
            servers = [
                c for c in psutil.Process(p.proc.pid).children(recursive=True) if "modelserver" in " ".join(c.cmdline())
            ]
            results["instance_rss_mb"] += [c.memory_info().rss / 2**20 for c in servers]
            url = f"{p.api_url}/endpoints/{name}/invocations"
            for rows in (1, 100):
                body = (data / f"body_{rows}.csv").read_bytes()
                signed = sign(url, body, {"Content-Type": "text/csv", "Accept": "text/csv"}, "sagemaker", key)
                wrk(signed, 8, 3)  # warm-up
                for c in CONCURRENCY:
                    runs = [
                        wrk(
                            sign(url, body, {"Content-Type": "text/csv", "Accept": "text/csv"}, "sagemaker", key),
                            c,
                            duration,
                        )
                        for _ in range(reps)
                    ]
                    results["load"][(instances, rows, c)] = runs
            sm.delete_endpoint(EndpointName=name)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--anchors", nargs="*", default=["thin_uvicorn_w1", "thin_uvicorn_w2", "mlflow_w1"])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10)
    a = ap.parse_args()
    root = Path(os.environ.get("PERF_ROOT", "/tmp/opensage-bench"))
    (root / "results").mkdir(parents=True, exist_ok=True)
    (root / "logs").mkdir(parents=True, exist_ok=True)
    data, model = prepare(root)
    raw = raw_inprocess(data, model)
    ours = opensage(data, model, a.reps, a.duration)
    peers = anchors(a.anchors, a.reps, a.duration, root)

    print(
        f"\nmedians of {a.reps} runs of {a.duration} s; raw in-process predict: "
        f"{raw[1]:.3f} ms (1 row), {raw[100]:.3f} ms (100 rows)"
    )
    print(
        f"CreateEndpoint -> InService: {ours['create_to_inservice_s'][1]:.2f} s (1 instance), "
        f"{ours['create_to_inservice_s'][2]:.2f} s (2 instances); model server RSS per instance: "
        f"{statistics.median(ours['instance_rss_mb']):.0f} MB\n"
    )
    print("| server | rows | concurrency | req/s | p50 (ms) | p99 (ms) | errors |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    table = []
    for (instances, rows, c), runs in sorted(ours["load"].items()):
        table.append(
            {
                "server": f"OpenSage endpoint, {instances} instance(s)",
                "rows": rows,
                "concurrency": c,
                "rps": statistics.median(r["rps"] for r in runs),
                "p50_ms": statistics.median(r["p50_us"] for r in runs) / 1000,
                "p99_ms": statistics.median(r["p99_us"] for r in runs) / 1000,
                "errors": sum(r["errors"] for r in runs),
            }
        )
    for name, res in peers.items():
        grouped: dict[tuple[str, int], list[dict]] = {}
        for run in res.get("runs", []):
            grouped.setdefault((run["body"], run["concurrency"]), []).append(run)
        for (body, c), runs in sorted(grouped.items()):
            table.append({"server": name, "rows": 1 if body.startswith("1row") else 100, "concurrency": c,
                          "rps": statistics.median(r["rps"] for r in runs),
                          "p50_ms": statistics.median(r["p50_ms"] for r in runs),
                          "p99_ms": statistics.median(r["p99_ms"] for r in runs),
                          "errors": sum(r["errors"] for r in runs)})
    for row in table:
        print(
            f"| {row['server']} | {row.get('rows', '')} | {row.get('concurrency', '')} | {row.get('rps', 0):.0f} | "
            f"{row.get('p50_ms', 0):.2f} | {row.get('p99_ms', 0):.2f} | {row.get('errors', '')} |"
        )
    if peers:
        print("\nanchor results (the kit's own summaries) are in", root / "results")
    (root / "results" / "serving_bench.json").write_text(
        json.dumps(
            {
                "raw_ms": raw,
                "opensage": table,
                "create_to_inservice_s": ours["create_to_inservice_s"],
                "instance_rss_mb": ours["instance_rss_mb"],
            },
            indent=2,
            default=str,
        )
    )


if __name__ == "__main__":
    main()
