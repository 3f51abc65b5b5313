"""Serving benchmark: OpenSage InvokeEndpoint against the bench kit's anchors, same model, same run.

Measured, for 1-row and 100-row CSV bodies at concurrency 1, 8 and 64 (wrk, one thread):
* raw in-process predict (xgboost ``inplace_predict`` on the parsed rows, median per call);
* the kit's anchors (../shared/bench): a thin ASGI app under uvicorn with 1 and 2 workers,
  `mlflow models serve`, Ray Serve with 1 and 2 replicas (inside a loopback-only network namespace,
  as the kit asks), each in its own venv from the kit's setup_envs.sh; an anchor that cannot run is
  listed with the reason;
* OpenSage: the same model behind an endpoint with 1 and with 2 instances, requests SigV4-signed
  with botocore and replayed by wrk (signed_load.py): every request goes through signature
  verification, the router and a model server.
Also: CreateEndpoint -> InService time, and the memory (PSS) the platform adds per extra instance.
Every run waits for the machine to be quiet first (the kit's rule) and records the CPU that other
processes used meanwhile; medians of --reps runs are printed, then the issue's goals, checked.

With --compare REV, OpenSage alone, before and after: a git worktree of REV (in a temporary
directory, removed at the end) and the current tree each run a platform, both up at once, their runs
interleaved cell by cell; one table gives each cell's two rows and the change.

Usage: python benchmarks/serving_bench.py [--reps 3] [--duration 10] [--anchors thin_uvicorn_w1 ...]
       python benchmarks/serving_bench.py --compare REV [--reps 1] [--duration 5] [--quiet-wait 5]
       (PERF_ROOT, default /tmp/opensage-bench, holds data, venvs, logs and results)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import site
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

HERE = Path(__file__).resolve().parent
KIT = HERE.parent.parent / "shared" / "bench"
IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
CONCURRENCY = (1, 8, 64)
ROWS = (1, 100)
NETNS = "osbench"
ANCHOR_ENVS = {"thin": "base", "mlflow": "mlflow", "ray": "ray", "bento": "bento"}
PEERS = ("mlflow", "ray", "bento")  # the stacks a user would otherwise pick (thin_* is the floor, not a peer)


def prepare(root: Path) -> tuple[Path, Path]:
    data, models = root / "data", root / "models"
    data.mkdir(parents=True, exist_ok=True)
    models.mkdir(parents=True, exist_ok=True)
    csv, model = data / "bank_41k.csv", models / "xgb_41k.ubj"
    env = {**os.environ, "PERF_ROOT": str(root)}
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
            env=env,
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
            env=env,
        )
    return data, model


def reference(data: Path, model: Path) -> tuple[dict[int, float], dict[int, list[float]]]:
    """Median in-process predict time (ms) per body, and the predictions every server must answer."""
    import numpy as np
    import xgboost as xgb

    booster = xgb.Booster()
    booster.load_model(str(model))
    times, predictions = {}, {}
    for rows in ROWS:
        text = (data / f"body_{rows}.csv").read_bytes()
        samples = []
        for _ in range(300):
            t = time.perf_counter()
            x = np.loadtxt(io.BytesIO(text), delimiter=",", ndmin=2, dtype=np.float32)
            out = booster.inplace_predict(x)
            samples.append(time.perf_counter() - t)
        times[rows] = statistics.median(samples) * 1000
        predictions[rows] = [float(v) for v in out]
    return times, predictions


def _numbers(body: bytes) -> list[float]:
    return [float(x) for x in re.findall(rb"[-+]?\d*\.?\d+(?:[eE][-+]?\d+)?", body)]


# --- anchors ----------------------------------------------------------------------------------------


def _kit_python(root: Path) -> str:
    base = root / "envs" / "base" / "bin" / "python"
    return str(base) if base.exists() else sys.executable


def _netns() -> str | None:
    """Make sure the loopback-only namespace exists; returns why not, or None."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    if listed.returncode != 0:
        return f"`ip netns` unavailable: {listed.stderr.strip()[:200]}"
    if not any(line.split()[0] == NETNS for line in listed.stdout.splitlines() if line.strip()):
        made = subprocess.run(["ip", "netns", "add", NETNS], capture_output=True, text=True)
        if made.returncode != 0:
            return f"cannot create network namespace {NETNS} (needs root): {made.stderr.strip()[:200]}"
    up = subprocess.run(["ip", "netns", "exec", NETNS, "ip", "link", "set", "lo", "up"], capture_output=True, text=True)
    return None if up.returncode == 0 else f"cannot bring up loopback in {NETNS}: {up.stderr.strip()[:200]}"


def anchors(names: list[str], reps: int, duration: int, root: Path) -> tuple[dict[str, dict], dict[str, str]]:
    """Run the kit's serve_bench for ``names``; returns (results by name, reason by name that did not run)."""
    found: dict[str, dict] = {}
    skipped: dict[str, str] = {}
    runnable = []
    for name in names:
        env_name = ANCHOR_ENVS.get(name.split("_")[0], "base")
        if not (root / "envs" / env_name / "bin" / "python").exists():
            skipped[name] = f"no venv {root}/envs/{env_name}: run {KIT}/setup_envs.sh {env_name}"
        else:
            runnable.append(name)
        for suffix in (".json", ".error.json"):
            (root / "results" / f"serve_{name}{suffix}").unlink(missing_ok=True)
    env = {**os.environ, "PERF_ROOT": str(root)}
    if any(n.startswith("mlflow") for n in runnable) and not (root / "results" / "mlflow_model.json").exists():
        logged = subprocess.run(
            [str(root / "envs" / "mlflow" / "bin" / "python"), str(KIT / "servers" / "mlflow_log.py")],
            env=env, cwd=root, capture_output=True, text=True,
        )  # fmt: skip
        if logged.returncode != 0:
            for n in [n for n in runnable if n.startswith("mlflow")]:
                runnable.remove(n)
                skipped[n] = f"mlflow_log.py failed: {logged.stderr.strip().splitlines()[-1:]}"
    ray = [n for n in runnable if n.startswith("ray")]
    if ray and (why := _netns()) is not None:
        for n in ray:
            runnable.remove(n)
            skipped[n] = why
    common = ["--reps", str(reps), "--duration", str(duration), "--concurrency", *map(str, CONCURRENCY)]
    kit = [_kit_python(root), str(KIT / "serve_bench.py")]
    plain = [n for n in runnable if n not in ray]
    if plain:
        subprocess.run([*kit, "--servers", *plain, *common], env=env, cwd=root, check=False)
    if [n for n in ray if n in runnable]:
        # Ray binds the node to the machine's non-loopback address: inside a namespace there is only loopback
        subprocess.run(["ip", "netns", "exec", NETNS, *kit, "--servers", *ray, *common], env=env, cwd=root,
                       check=False)  # fmt: skip
    for name in runnable:
        path, error = root / "results" / f"serve_{name}.json", root / "results" / f"serve_{name}.error.json"
        if path.exists():
            found[name] = json.loads(path.read_text())
        elif error.exists():
            skipped[name] = json.loads(error.read_text()).get("error", "failed")[:300]
        else:
            skipped[name] = f"no result; see {root}/logs/serve_{name}.log"
    return found, skipped


def anchor_rows(name: str, result: dict) -> list[dict]:
    grouped: dict[tuple[int, int], list[dict]] = {}
    for run in result.get("runs", []):
        if "rps" in run:
            grouped.setdefault((1 if run["body"].startswith("1row") else 100, run["concurrency"]), []).append(run)
    return [
        {
            "server": name,
            "rows": rows,
            "concurrency": c,
            "rps": statistics.median(r["rps"] for r in runs),
            "p50_ms": statistics.median(r["p50_ms"] for r in runs),
            "p99_ms": statistics.median(r["p99_ms"] for r in runs),
            "errors": sum(r["errors"] for r in runs),
            "foreign_cores": statistics.median(r["noise"]["foreign_cores"] for r in runs),
        }
        for (rows, c), runs in sorted(grouped.items())
    ]


# --- OpenSage ---------------------------------------------------------------------------------------


def _tar(model: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(model, arcname="xgboost-model")
    return buf.getvalue()


def _platform_pss_mb(pid: int) -> float:
    """PSS of the API server and its model servers (the object store is left out: it does not change)."""
    total = 0
    for proc in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]:
        try:
            if "weed" not in proc.name():
                total += proc.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total / 2**20


def _kit() -> None:
    """The bench kit's modules, this directory's and the tests' helpers on the import path."""
    for path in (str(HERE), str(HERE.parent / "tests"), str(KIT)):
        if path not in sys.path:
            sys.path.insert(0, path)


def _deploy(p: Any, model: Path) -> tuple[Any, Any, tuple[str, str]]:
    """The model ``bench`` on platform ``p``: its sagemaker and runtime clients and the signing key."""
    session = p.session()
    s3, sm, runtime = session.client("s3"), session.client("sagemaker"), session.client("sagemaker-runtime")
    s3.create_bucket(Bucket="bench")
    s3.put_object(Bucket="bench", Key="model.tar.gz", Body=_tar(model))
    account = session.client("sts").get_caller_identity()["Account"]
    sm.create_model(
        ModelName="bench",
        PrimaryContainer={"Image": IMAGE, "ModelDataUrl": "s3://bench/model.tar.gz"},
        ExecutionRoleArn=f"arn:aws:iam::{account}:role/OpenSageExecutionRole",
    )
    credentials = session.get_credentials()
    return sm, runtime, (credentials.access_key, credentials.secret_key)


def _endpoint(sm: Any, runtime: Any, name: str, instances: int, data: Path, expected: dict[int, list[float]]) -> float:
    """Create endpoint ``name`` with ``instances`` instances, check its answers; CreateEndpoint -> InService (s)."""
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
    while (status := sm.describe_endpoint(EndpointName=name)["EndpointStatus"]) == "Creating":
        time.sleep(0.01)
    if status != "InService":
        raise SystemExit(f"endpoint {name} is {status}: {sm.describe_endpoint(EndpointName=name)}")
    took = time.perf_counter() - started
    for rows in ROWS:
        body = (data / f"body_{rows}.csv").read_bytes()
        answer = runtime.invoke_endpoint(EndpointName=name, Body=body, ContentType="text/csv")["Body"].read()
        got = _numbers(answer)
        if len(got) != rows or any(abs(a - b) > 1e-5 for a, b in zip(got, expected[rows], strict=True)):
            raise SystemExit(f"OpenSage answered wrongly for {rows} row(s): {answer[:200]!r}")
    return took


def _load(p: Any, name: str, key: tuple[str, str], body: bytes, concurrency: int, duration: float) -> dict:
    from signed_load import sign, wrk

    url = f"{p.api_url}/endpoints/{name}/invocations"
    return wrk(
        sign(url, body, {"Content-Type": "text/csv", "Accept": "text/csv"}, "sagemaker", key), concurrency, duration
    )


def _measure(p: Any, name: str, key: tuple[str, str], body: bytes, c: int, duration: float, quiet_s: float) -> dict:
    """One wrk run once the machine is quiet, with the CPU that other processes used meanwhile."""
    from common import Noise
    from loadgen import wait_quiet

    wait_quiet(max_wait=quiet_s)
    with Noise([p.proc.pid]) as noise:
        run = _load(p, name, key, body, c, duration)
    run["foreign_cores"] = noise.result["foreign_cores"]
    return run


def _print_run(label: str, rows: int, c: int, run: dict) -> None:
    print(
        f"[{label}] {rows:3d} row(s) c={c:<3d} rps={run['rps']:8.1f} "
        f"p50={run['p50_us'] / 1000:7.2f}ms p99={run['p99_us'] / 1000:7.2f}ms "
        f"err={run['errors']} foreign={run['foreign_cores']}",
        flush=True,
    )


def _summary(server: str, rows: int, c: int, rs: list[dict]) -> dict:
    return {
        "server": server,
        "rows": rows,
        "concurrency": c,
        "rps": statistics.median(r["rps"] for r in rs),
        "p50_ms": statistics.median(r["p50_us"] for r in rs) / 1000,
        "p99_ms": statistics.median(r["p99_us"] for r in rs) / 1000,
        "errors": sum(r["errors"] for r in rs),
        "foreign_cores": statistics.median(r["foreign_cores"] for r in rs),
    }


def _delete_endpoint(sm: Any, name: str) -> None:
    sm.delete_endpoint(EndpointName=name)
    while name in [e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]]:
        time.sleep(0.1)


def opensage(
    data: Path, model: Path, reps: int, duration: int, expected: dict[int, list[float]], quiet_s: float = 20
) -> dict:
    _kit()
    from helpers import running_platform

    results: dict = {"rows": [], "create_to_inservice_s": {}, "pss_mb": {}, "server_pss_mb": {}}
    with tempfile.TemporaryDirectory() as tmp, running_platform(Path(tmp) / "home", Path(tmp) / "aws") as p:
        sm, runtime, key = _deploy(p, model)
        results["pss_mb"][0] = _platform_pss_mb(p.proc.pid)
        for instances in (1, 2):
            name = f"bench-{instances}"
            results["create_to_inservice_s"][instances] = _endpoint(sm, runtime, name, instances, data, expected)
            for rows in ROWS:  # warm-up
                _load(p, name, key, (data / f"body_{rows}.csv").read_bytes(), 8, 3)
            time.sleep(1)
            results["pss_mb"][instances] = _platform_pss_mb(p.proc.pid)
            servers = [
                c
                for c in psutil.Process(p.proc.pid).children(recursive=True)
                if "opensage.serving.modelserver" in c.cmdline()
            ]
            results["server_pss_mb"][instances] = [c.memory_full_info().pss / 2**20 for c in servers]
            runs: dict[tuple[int, int], list[dict]] = {}
            for _ in range(reps):
                for rows in ROWS:
                    body = (data / f"body_{rows}.csv").read_bytes()
                    for c in CONCURRENCY:
                        run = _measure(p, name, key, body, c, duration, quiet_s)
                        runs.setdefault((rows, c), []).append(run)
                        _print_run(f"opensage-{instances}", rows, c, run)
            server = f"opensage_{instances}_instance{'s' if instances > 1 else ''}"
            results["rows"] += [_summary(server, rows, c, rs) for (rows, c), rs in sorted(runs.items())]
            _delete_endpoint(sm, name)
    return results


# --- before and after -------------------------------------------------------------------------------


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(HERE.parent), *args], check=True, capture_output=True, text=True).stdout


@contextlib.contextmanager
def _worktree(rev: str, path: Path) -> Iterator[str]:
    """A detached ``git worktree`` of ``rev`` at ``path``, removed on the way out; yields the short hash."""
    sha = _git("rev-parse", "--verify", "--short", f"{rev}^{{commit}}").strip()
    _git("worktree", "add", "--detach", "--quiet", str(path), sha)
    try:
        yield sha
    finally:
        _git("worktree", "remove", "--force", str(path))


def _tree_python(venv: Path, src: Path) -> str:
    """An interpreter that imports OpenSage from ``src`` and every other package from this one's.

    A virtual environment whose only ``.pth`` puts ``src`` first, then this interpreter's site
    directories (with their own ``.pth`` files, so an editable OpenSage there comes after ``src``).
    The platform starts its model servers with its own interpreter, so they run ``src``'s code too.
    """
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    lines = [str(src), *(f"import site; site.addsitedir({d!r})" for d in site.getsitepackages())]
    Path(purelib, "opensage-tree.pth").write_text("\n".join(lines) + "\n")
    found = subprocess.run(
        [python, "-c", "import opensage, xgboost; print(opensage.__file__)"],
        capture_output=True, text=True, cwd=venv, env={"PATH": "/usr/local/bin:/usr/bin:/bin"},
    )  # fmt: skip
    if not found.stdout.strip().startswith(str(src)):
        raise SystemExit(f"{python} imports OpenSage from {found.stdout.strip() or found.stderr[-300:]}, not {src}")
    return python


def _check_servers(p: Any, venv: Path, instances: int) -> None:
    """The platform's model servers run on its tree's interpreter (so on that tree's code)."""
    argvs = [c.cmdline() for c in psutil.Process(p.proc.pid).children(recursive=True)]
    servers = [argv for argv in argvs if "opensage.serving.modelserver" in argv]
    if len(servers) != instances or not all(any(a.startswith(str(venv)) for a in argv) for argv in servers):
        raise SystemExit(f"expected {instances} model server(s) on {venv}/bin/python, found {servers}")


def compare(
    rev: str, data: Path, model: Path, reps: int, duration: int, expected: dict[int, list[float]], quiet_s: float
) -> dict:
    """The OpenSage measurement on ``rev`` and on the current tree, both platforms up at once and their
    runs interleaved cell by cell (who goes first alternates), so drift on the machine hits both alike."""
    _kit()
    from helpers import running_platform

    results: dict = {"rows": [], "create_to_inservice_s": {}, "trees": {}}
    with tempfile.TemporaryDirectory() as tmp_name, contextlib.ExitStack() as stack:
        tmp = Path(tmp_name)
        old = stack.enter_context(_worktree(rev, tmp / "tree"))
        dirty = " + uncommitted changes" if _git("status", "--porcelain", "--", "src").strip() else ""
        trees = {old: tmp / "tree" / "src", "current": HERE.parent / "src"}
        results["trees"] = {
            old: f"git worktree of {rev}" + (f" ({old})" if rev != old else ""),
            "current": f"{HERE.parent} at {_git('rev-parse', '--short', 'HEAD').strip()}{dirty}",
        }
        sides = []
        for label, src in trees.items():
            python = _tree_python(tmp / f"venv-{label}", src)
            p = stack.enter_context(running_platform(tmp / f"home-{label}", tmp / f"aws-{label}", python=python))
            sides.append((label, p, *_deploy(p, model)))
        cell = 0
        for instances in (1, 2):
            name = f"bench-{instances}"
            for label, p, sm, runtime, key in sides:
                took = _endpoint(sm, runtime, name, instances, data, expected)
                results["create_to_inservice_s"].setdefault(label, {})[instances] = took
                _check_servers(p, tmp / f"venv-{label}", instances)
                for rows in ROWS:  # warm-up
                    _load(p, name, key, (data / f"body_{rows}.csv").read_bytes(), 8, 3)
            runs: dict[tuple[str, int, int], list[dict]] = {}
            for _ in range(reps):
                for rows in ROWS:
                    body = (data / f"body_{rows}.csv").read_bytes()
                    for c in CONCURRENCY:
                        for label, p, _sm, _rt, key in sides if cell % 2 == 0 else sides[::-1]:
                            run = _measure(p, name, key, body, c, duration, quiet_s)
                            runs.setdefault((label, rows, c), []).append(run)
                            _print_run(f"{label}-{instances}", rows, c, run)
                        cell += 1
            for (label, rows, c), rs in sorted(runs.items(), key=lambda kv: (kv[0][1], kv[0][2])):
                results["rows"].append({"tree": label, "instances": instances, **_summary(label, rows, c, rs)})
            for _label, _p, sm, _rt, _key in sides:
                _delete_endpoint(sm, name)
    results["old"] = old
    return results


def _change(new: float, old: float) -> str:
    return f"{(new - old) / old * 100:+.1f}%" if old else "n/a"


def report_compare(rev: str, results: dict, reps: int, duration: int, root: Path) -> None:
    old = results["old"]
    print(
        f"\nmedians of {reps} run(s) of {duration} s each (wrk, 1 thread, closed loop), SigV4-signed; "
        f"the two platforms' runs interleaved\n"
        + "".join(f"{label}: {tree}\n" for label, tree in results["trees"].items())
    )
    for label, times in results["create_to_inservice_s"].items():
        print(f"CreateEndpoint -> InService, {label}: {times[1]:.2f} s (1 instance), {times[2]:.2f} s (2 instances)")
    print("\n| instances | rows | concurrency | tree | req/s | p50 (ms) | p99 (ms) | errors | other load (cores) |")
    print("|---:|---:|---:|---|---:|---:|---:|---:|---:|")
    cells = {(r["tree"], r["instances"], r["rows"], r["concurrency"]): r for r in results["rows"]}
    for instances in (1, 2):
        for rows in ROWS:
            for c in CONCURRENCY:
                before, after = cells[(old, instances, rows, c)], cells[("current", instances, rows, c)]
                for r in (before, after):
                    rps, p50, p99 = (
                        f"{r[k]:.{digits}f}" + (f" ({_change(r[k], before[k])})" if r is after else "")
                        for k, digits in (("rps", 0), ("p50_ms", 2), ("p99_ms", 2))
                    )
                    print(
                        f"| {instances} | {rows} | {c} | {r['tree']} | {rps} | {p50} | {p99} | {r['errors']} | "
                        f"{r['foreign_cores']:.2f} |"
                    )
    print("\n(in brackets: current against " + old + "; higher req/s and lower latencies are better)")
    path = root / "results" / "serving_compare.json"
    path.write_text(json.dumps({"compare": rev, **results}, indent=2, default=str))
    print(f"\nresults: {path}")


# --- report -----------------------------------------------------------------------------------------


def _cell(rows: list[dict], server: str, n: int, c: int) -> dict | None:
    return next((r for r in rows if r["server"] == server and r["rows"] == n and r["concurrency"] == c), None)


def goals(table: list[dict]) -> list[str]:
    """The issue's targets, checked against this run's medians."""
    out = []
    for n in ROWS:
        ours, thin = _cell(table, "opensage_1_instance", n, 1), _cell(table, "thin_uvicorn_w1", n, 1)
        if ours and thin:
            gap = ours["p50_ms"] - thin["p50_ms"]
            out.append(
                f"p50 at c=1, {n} row(s): OpenSage {ours['p50_ms']:.2f} ms vs thin {thin['p50_ms']:.2f} ms, "
                f"+{gap:.2f} ms (goal <= +0.50): {'met' if gap <= 0.5 else 'NOT met'}"
            )
    for n in ROWS:
        for c in CONCURRENCY[1:]:
            ours, thin2 = _cell(table, "opensage_2_instances", n, c), _cell(table, "thin_uvicorn_w2", n, c)
            peers = [r for r in table if r["server"].startswith(PEERS) and r["rows"] == n and r["concurrency"] == c]
            if not ours:
                continue
            best = max(peers, key=lambda r: r["rps"], default=None)
            parts = [f"2 instances, {n} row(s), c={c}: {ours['rps']:.0f} req/s, {ours['errors']} errors"]
            ok = ours["errors"] == 0
            if best:
                ratio = ours["rps"] / best["rps"]
                ok &= ratio >= 2
                parts.append(f"{ratio:.1f}x best peer ({best['server']} {best['rps']:.0f}; goal >= 2x)")
            if thin2:
                ratio = ours["rps"] / thin2["rps"]
                ok &= ratio >= 0.5
                parts.append(f"{ratio:.2f}x thin w2 ({thin2['rps']:.0f}; goal >= 0.5x)")
            out.append(", ".join(parts) + f": {'met' if ok else 'NOT met'}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--anchors", nargs="*", default=["thin_uvicorn_w1", "thin_uvicorn_w2", "mlflow_w1", "ray_r1", "ray_r2"]
    )
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--compare", metavar="REV", help="measure OpenSage at git revision REV beside the current tree")
    ap.add_argument("--quiet-wait", type=float, default=20, help="at most this long (s) to wait for a quiet machine")
    a = ap.parse_args()
    root = Path(os.environ.get("PERF_ROOT", "/tmp/opensage-bench"))
    for sub in ("results", "logs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    os.environ["PERF_ROOT"] = str(root)  # the kit's modules read it at import
    data, model = prepare(root)
    raw, expected = reference(data, model)
    if a.compare:
        report_compare(a.compare, compare(a.compare, data, model, a.reps, a.duration, expected, a.quiet_wait),
                       a.reps, a.duration, root)  # fmt: skip
        return
    ours = opensage(data, model, a.reps, a.duration, expected, a.quiet_wait)
    peers, skipped = anchors(a.anchors, a.reps, a.duration, root)

    table = list(ours["rows"])
    for name, result in peers.items():
        table += anchor_rows(name, result)
    order = {name: i for i, name in enumerate(["opensage_1_instance", "opensage_2_instances", *a.anchors])}
    table.sort(key=lambda r: (r["rows"], r["concurrency"], order.get(r["server"], 99)))
    pss = ours["pss_mb"]
    print(
        f"\nmedians of {a.reps} runs of {a.duration} s each (wrk, 1 thread, closed loop); OpenSage requests are "
        "SigV4-signed and verified on every request"
    )
    print(f"raw in-process predict: {raw[1]:.3f} ms (1 row), {raw[100]:.3f} ms (100 rows)")
    print(
        f"CreateEndpoint -> InService: {ours['create_to_inservice_s'][1]:.2f} s (1 instance), "
        f"{ours['create_to_inservice_s'][2]:.2f} s (2 instances)"
    )
    print(
        f"platform PSS without the object store: {pss[0]:.0f} MB idle, {pss[1]:.0f} MB with 1 instance, "
        f"{pss[2]:.0f} MB with 2: {pss[2] - pss[1]:.0f} MB per extra instance "
        f"(model servers: {', '.join(f'{m:.0f}' for m in ours['server_pss_mb'][2])} MB PSS each)\n"
    )
    print("| server | rows | concurrency | req/s | p50 (ms) | p99 (ms) | errors | other load (cores) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in table:
        print(
            f"| {r['server']} | {r['rows']} | {r['concurrency']} | {r['rps']:.0f} | {r['p50_ms']:.2f} | "
            f"{r['p99_ms']:.2f} | {r['errors']} | {r['foreign_cores']:.2f} |"
        )
    for name, why in skipped.items():
        print(f"| {name} | - | - | not run: {why} | | | | |")
    print("\ngoals:")
    for line in goals(table):
        print("  " + line)
    (root / "results" / "serving_bench.json").write_text(
        json.dumps(
            {"raw_ms": raw, "table": table, "skipped": skipped, **{k: v for k, v in ours.items() if k != "rows"}},
            indent=2,
            default=str,
        )
    )
    print(f"\nresults: {root / 'results' / 'serving_bench.json'}; anchors' own summaries beside it")


if __name__ == "__main__":
    main()
