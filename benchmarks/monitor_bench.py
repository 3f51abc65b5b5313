"""Model Monitor baseline: the analyzer's wall time and peak memory against the floor, in separate processes.

The floor is what one process needs anyway: pandas ``read_csv`` and ``describe()`` plus a KLL sketch per
column (Apache DataSketches, k = 2048). The analyzer writes statistics.json and constraints.json from the
same CSV (the bench kit's bank-marketing data, made by its gen_data.py when missing).

    python benchmarks/monitor_bench.py --rows 1000000 --reps 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

KIT = Path("/work/shared/bench")
FLOOR = """
import sys, time, resource
import numpy as np, pandas as pd
from datasketches import kll_doubles_sketch
t = time.perf_counter()
frame = pd.read_csv(sys.argv[1], header=None, engine="pyarrow")
frame.describe()
for name in frame.columns:
    s = kll_doubles_sketch(2048); s.update(np.ascontiguousarray(frame[name].dropna().to_numpy(np.float64)))
print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""
ANALYZER = """
import os, sys, time, resource
from opensage.monitor import analyzer
t = time.perf_counter()
analyzer.run({"dataset_format": '{"csv": {"header": false}}', "dataset_source": sys.argv[1],
              "output_path": sys.argv[2]})
print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def _run(code: str, *args: str) -> tuple[float, float]:
    out = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")},
    )
    seconds, mib = out.stdout.split()[-2:]
    return float(seconds), float(mib)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    root = Path(os.environ.get("PERF_ROOT", Path.home() / ".cache" / "opensage-bench")) / "data"
    root.mkdir(parents=True, exist_ok=True)
    data = root / f"bank_{args.rows}.csv"
    if not data.exists():
        subprocess.run(
            [sys.executable, str(KIT / "gen_data.py"), "--rows", str(args.rows), "--seed", "42", "--out", str(data)],
            check=True,
        )
    with tempfile.TemporaryDirectory() as out:
        results = {
            "floor (pandas describe + KLL)": [_run(FLOOR, str(data)) for _ in range(args.reps)],
            "analyzer (statistics + constraints)": [_run(ANALYZER, str(data), out) for _ in range(args.reps)],
        }
    floor = statistics.median(t for t, _ in results["floor (pandas describe + KLL)"])
    print(f"{'rows':>10} {'what':<38} {'median s':>9} {'peak MiB':>9} {'x floor':>8}")
    for name, runs in results.items():
        t, mib = statistics.median(r[0] for r in runs), max(r[1] for r in runs)
        print(f"{args.rows:>10} {name:<38} {t:>9.2f} {mib:>9.0f} {t / floor:>8.2f}")
    print(json.dumps({k: v for k, v in results.items()}))


if __name__ == "__main__":
    main()
