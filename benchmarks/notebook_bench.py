"""Notebook instances benchmark: how long an instance takes to come up and what one costs at rest.

Against a real ``opensage up`` (its own home and ports), as a boto3 client sees it:

* CreateNotebookInstance -> ``InService`` (directories, client files, JupyterLab answering);
* StopNotebookInstance -> ``Stopped``, then StartNotebookInstance -> ``InService``;
* the resident memory (RSS) of one idle instance's process tree (its JupyterLab and what it started), a few
  seconds after it answers, then with one idle kernel;
* ``GET api/status`` through the platform's proxy (signed in with a presigned URL), p50 over a few calls.

Usage: python benchmarks/notebook_bench.py [--reps 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from helpers import running_platform  # noqa: E402


def wait(sm: Any, name: str, status: str, timeout: float = 300) -> float:
    start = time.perf_counter()
    while True:
        got = sm.describe_notebook_instance(NotebookInstanceName=name)
        if got["NotebookInstanceStatus"] == status:
            return time.perf_counter() - start
        if got["NotebookInstanceStatus"] == "Failed" or time.perf_counter() - start > timeout:
            raise RuntimeError(f"{name} is {got['NotebookInstanceStatus']} ({got.get('FailureReason')}), not {status}")
        time.sleep(0.05)


def tree_rss_mb(name: str) -> float:
    """RSS of the instance's JupyterLab and every process under it."""
    marker = f"--ServerApp.base_url=/_opensage/notebooks/{name}/"
    roots = [p for p in psutil.process_iter(["cmdline"]) if marker in (p.info["cmdline"] or [])]
    procs = {p.pid: p for root in roots for p in [root, *root.children(recursive=True)]}
    return sum(p.memory_info().rss for p in procs.values()) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    rows: dict[str, list[float]] = {
        "create -> InService (s)": [],
        "stop -> Stopped (s)": [],
        "start -> InService (s)": [],
        "idle RSS of one instance (MB)": [],
        "idle RSS with one kernel (MB)": [],
        "GET api/status through the proxy, p50 (ms)": [],
    }
    with tempfile.TemporaryDirectory() as tmp, running_platform(Path(tmp) / "home", Path(tmp) / "aws") as platform:
        session = platform.session()
        sm = session.client("sagemaker")
        role = f"arn:aws:iam::{session.client('sts').get_caller_identity()['Account']}:role/OpenSageExecutionRole"
        for _ in range(args.reps):
            name = f"bench-{uuid.uuid4().hex[:8]}"
            start = time.perf_counter()
            sm.create_notebook_instance(NotebookInstanceName=name, InstanceType="ml.t3.medium", RoleArn=role)
            wait(sm, name, "InService")
            rows["create -> InService (s)"].append(time.perf_counter() - start)
            time.sleep(3)  # idle
            rows["idle RSS of one instance (MB)"].append(tree_rss_mb(name))
            url = sm.create_presigned_notebook_instance_url(NotebookInstanceName=name)["AuthorizedUrl"]
            base = f"{platform.api_url}/_opensage/notebooks/{name}/"
            with httpx.Client(follow_redirects=True, trust_env=False, timeout=60) as client:
                client.get(url).raise_for_status()
                times = []
                for _ in range(20):
                    t0 = time.perf_counter()
                    client.get(f"{base}api/status").raise_for_status()
                    times.append((time.perf_counter() - t0) * 1000)
                rows["GET api/status through the proxy, p50 (ms)"].append(statistics.median(times))
                kernel = client.post(f"{base}api/kernels", json={"name": "python3"}).json()["id"]
                time.sleep(5)
                rows["idle RSS with one kernel (MB)"].append(tree_rss_mb(name))
                client.delete(f"{base}api/kernels/{kernel}")
            start = time.perf_counter()
            sm.stop_notebook_instance(NotebookInstanceName=name)
            wait(sm, name, "Stopped")
            rows["stop -> Stopped (s)"].append(time.perf_counter() - start)
            start = time.perf_counter()
            sm.start_notebook_instance(NotebookInstanceName=name)
            wait(sm, name, "InService")
            rows["start -> InService (s)"].append(time.perf_counter() - start)
            sm.stop_notebook_instance(NotebookInstanceName=name)
            wait(sm, name, "Stopped")
            sm.delete_notebook_instance(NotebookInstanceName=name)
    print(f"| measure (n={args.reps}) | median | min | max |")
    print("|---|---|---|---|")
    for label, values in rows.items():
        print(f"| {label} | {statistics.median(values):.2f} | {min(values):.2f} | {max(values):.2f} |")


if __name__ == "__main__":
    main()
