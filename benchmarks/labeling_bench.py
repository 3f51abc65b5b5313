"""Labeling benchmark: text classification jobs with automated labeling, labeled through the worker portal.

For each size, a platform this benchmark starts runs a TextMultiClass labeling job with automated labeling
(the built-in XGBoost trained on the human labels, its confident labels taken) over that many synthetic
reviews (two classes told apart by a few words among filler), and one worker answers every task the
portal hands out, over HTTP, with the true label (``GET jobs/<job>/task``, ``POST jobs/<job>/objects/<n>``,
as the task page does). Printed per size: how many objects humans and the machine labeled, how many
machine labels are right, the rounds (training jobs), the portal's time per task (the two calls) and
CreateLabelingJob -> Completed.

Usage: python benchmarks/labeling_bench.py [--sizes 200 1000 5000]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))

POSITIVE = ["great", "wonderful", "excellent", "lovely", "superb", "delightful", "fantastic", "brilliant"]
NEGATIVE = ["awful", "terrible", "dreadful", "horrible", "poor", "disappointing", "bad", "miserable"]
FILLER = ["the", "film", "was", "plot", "acting", "really", "and", "quite", "story", "ending", "music", "a"]


def texts(n: int, seed: int) -> dict[str, str]:
    rng = random.Random(seed)
    out = {}
    while len(out) < n:
        label = rng.choice(["positive", "negative"])
        words = rng.sample(FILLER, 6) + rng.sample(POSITIVE if label == "positive" else NEGATIVE, 2)
        rng.shuffle(words)
        out[" ".join(words) + f" #{len(out)}"] = label
    return out


def run(platform: Any, kit: Any, team: dict[str, Any], size: int) -> dict[str, Any]:
    session = platform.session()
    s3, sm = session.client("s3"), session.client("sagemaker")
    truth = texts(size, size)
    name = f"bench-{size}"
    kit.put_job_files(s3, "bench", name, [{"source": t} for t in truth], ["positive", "negative"])
    account = session.client("sts").get_caller_identity()["Account"]
    request = kit.labeling_request(name, team["arn"], f"arn:aws:iam::{account}:role/OpenSageExecutionRole", "bench",
                                   "TextMultiClass")  # fmt: skip
    request["LabelingJobAlgorithmsConfig"] = {"LabelingJobAlgorithmSpecificationArn": kit.TEXT_ALGORITHM}
    started = time.perf_counter()
    sm.create_labeling_job(**request)
    kit.wait_job(sm, name, ("InProgress",))
    tasks, task_s = 0, 0.0
    with kit.worker(platform.api_url, "ana", team["password"]) as ana:
        while sm.describe_labeling_job(LabelingJobName=name)["LabelingJobStatus"] == "InProgress":
            t0 = time.perf_counter()
            task = ana.get(f"/_opensage/labeling/jobs/{name}/task").json()
            if task["done"]:
                time.sleep(0.2)  # a round of automated labeling runs
                continue
            ana.post(task["submit"], json={"label": truth[task["text"]]}).raise_for_status()
            task_s += time.perf_counter() - t0
            tasks += 1
    desc = kit.wait_job(sm, name, ("Completed",), timeout=600)
    wall = time.perf_counter() - started
    lines = kit.read_manifest(s3, desc["LabelingJobOutput"]["OutputDatasetS3Uri"])
    machine = [x for x in lines if x["label-metadata"]["human-annotated"] == "no"]
    rounds = len(sm.list_training_jobs(NameContains=f"{name}-al-train")["TrainingJobSummaries"])
    return {
        "size": size,
        "human": desc["LabelCounters"]["HumanLabeled"],
        "machine": len(machine),
        "right": sum(x["label-metadata"]["class-name"] == truth[x["source"]] for x in machine),
        "rounds": rounds,
        "task_ms": 1000 * task_s / max(tasks, 1),
        "wall_s": wall,
    }


def main() -> None:
    import labeling_kit as kit
    from helpers import running_platform

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[200, 1000, 5000])
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp, running_platform(Path(tmp) / "home", Path(tmp) / "aws") as platform:
        platform.session().client("s3").create_bucket(Bucket="bench")
        team = kit.make_team(platform.session(), "bench", ["ana"])
        for size in a.sizes:
            rows.append(run(platform, kit, team, size))
    print("\n| objects | human-labeled | machine-labeled | machine labels right | rounds | portal ms a task"
          " (GET task + POST answer) | Create -> Completed s |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['size']:,} | {r['human']:,} | {r['machine']:,} | {r['right']:,} | {r['rounds']} | "
              f"{r['task_ms']:.1f} | {r['wall_s']:.1f} |")  # fmt: skip


if __name__ == "__main__":
    main()
