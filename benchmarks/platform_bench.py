"""Platform benchmark: `opensage up` to ready, idle memory, and the protocol layer's cost.

* up -> ready: from spawning `opensage up` to the health route answering and S3 answering, on a
  new home (cold) and on the same home again (warm);
* idle RSS of the whole platform (API server and object store process tree), after a settle;
* requests/s and p50/p99 of SageMaker ListTrainingJobs (AWS JSON) and STS GetCallerIdentity (query)
  with SigV4 verification on, at concurrency 1 and 16, against the unauthenticated health route as a
  floor. Requests are signed once with botocore and replayed with wrk (see signed_load.py).

Usage: python benchmarks/platform_bench.py [--reps 3] [--duration 10]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from signed_load import Signed, sign, wrk  # noqa: E402

from helpers import free_base_port, platform_env  # noqa: E402


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=0.5):
            return True
    except urllib.error.HTTPError:
        return True  # S3 answers 403 to an anonymous request: it is up
    except OSError:
        return False


def start(home: Path, aws: Path, port: int) -> tuple[subprocess.Popen[bytes], float, float]:
    env = platform_env(home, aws)
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "opensage", "up", "--home", str(home), "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    api = s3 = 0.0
    while not (api and s3):
        if proc.poll() is not None:
            raise RuntimeError("opensage up exited")
        now = time.perf_counter() - started
        if not api and _answers(f"http://127.0.0.1:{port}/_opensage/health"):
            api = now
        if not s3 and _answers(f"http://127.0.0.1:{port + 1}/"):
            s3 = now
        time.sleep(0.02)
    return proc, api, s3


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(40)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def tree_rss_mb(pid: int) -> float:
    root = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]) / 2**20


def credentials(aws: Path) -> tuple[str, str]:
    section = (aws / "credentials").read_text().split("[opensage]", 1)[1]
    values = dict(line.split(" = ", 1) for line in section.strip().splitlines()[:2])
    return values["aws_access_key_id"], values["aws_secret_access_key"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--out", default=os.environ.get("PERF_ROOT", "/tmp/opensage-bench"))
    a = ap.parse_args()
    rows: dict[str, list[float]] = {"cold_api": [], "cold_s3": [], "warm_api": [], "warm_s3": []}
    load: dict[tuple[str, int], list[dict]] = {}
    rss = []
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(a.reps):
            home, aws, port = Path(tmp) / f"home{rep}", Path(tmp) / f"aws{rep}", free_base_port()
            proc, api, s3 = start(home, aws, port)
            rows["cold_api"].append(api)
            rows["cold_s3"].append(s3)
            stop(proc)
            proc, api, s3 = start(home, aws, port)
            rows["warm_api"].append(api)
            rows["warm_s3"].append(s3)
            try:
                time.sleep(5)
                rss.append(tree_rss_mb(proc.pid))
                key = credentials(aws)
                base = f"http://127.0.0.1:{port}/"
                targets = {
                    "health (no auth, floor)": Signed(base + "_opensage/health", b"", {}),
                    "SageMaker ListTrainingJobs": sign(
                        base,
                        b"{}",
                        {"X-Amz-Target": "SageMaker.ListTrainingJobs", "Content-Type": "application/x-amz-json-1.1"},
                        "sagemaker",
                        key,
                    ),
                    "STS GetCallerIdentity": sign(
                        base,
                        b"Action=GetCallerIdentity&Version=2011-06-15",
                        {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
                        "sts",
                        key,
                    ),
                }
                for name, signed in targets.items():
                    for c in (1, 16):
                        load.setdefault((name, c), []).append(wrk(signed, c, a.duration))
            finally:
                stop(proc)
    out = Path(a.out) / "results"
    out.mkdir(parents=True, exist_ok=True)
    result = {
        "startup_s": {k: statistics.median(v) for k, v in rows.items()},
        "idle_rss_mb": statistics.median(rss),
        "load": [
            {
                "target": n,
                "concurrency": c,
                "rps": statistics.median(r["rps"] for r in runs),
                "p50_ms": statistics.median(r["p50_us"] for r in runs) / 1000,
                "p99_ms": statistics.median(r["p99_us"] for r in runs) / 1000,
                "errors": sum(r["errors"] for r in runs),
            }
            for (n, c), runs in load.items()
        ],
    }
    (out / "platform_bench.json").write_text(json.dumps(result, indent=2))
    s = result["startup_s"]
    print(f"\nmedians of {a.reps} runs\n")
    print("| measure | value |\n|---|---:|")
    print(f"| `opensage up` -> API ready, new home (s) | {s['cold_api']:.2f} |")
    print(f"| `opensage up` -> S3 ready, new home (s) | {s['cold_s3']:.2f} |")
    print(f"| `opensage up` -> API ready, existing home (s) | {s['warm_api']:.2f} |")
    print(f"| `opensage up` -> S3 ready, existing home (s) | {s['warm_s3']:.2f} |")
    print(f"| idle RSS, API server + object store (MB) | {result['idle_rss_mb']:.0f} |")
    print("\n| request (SigV4 verified) | concurrency | req/s | p50 (ms) | p99 (ms) | errors |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in result["load"]:
        print(
            f"| {r['target']} | {r['concurrency']} | {r['rps']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
            f"{r['errors']} |"
        )


if __name__ == "__main__":
    main()
