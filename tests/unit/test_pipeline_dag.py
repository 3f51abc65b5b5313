"""How the console lays out a pipeline's DAG: a column per depth, an edge per dependency."""

from __future__ import annotations

import json

from opensage.console.pipelines import NODE_H, NODE_W, dag, step_rows


def _step(name: str, depends: list[str] | None = None) -> dict:
    return {"Name": name, "Type": "Processing", "Arguments": {}, **({"DependsOn": depends} if depends else {})}


def test_columns_follow_the_longest_path() -> None:
    text = json.dumps(
        {
            "Version": "2020-12-01",
            "Steps": [_step("a"), _step("b", ["a"]), _step("c", ["a"]), _step("d", ["b", "c"]), _step("e")],
        }
    )
    drawn = dag(text, {"a": "Succeeded", "b": "Executing"})
    where = {n.name: (n.x, n.y, n.status) for n in drawn.nodes}
    assert where["a"][0] == where["e"][0] < where["b"][0] == where["c"][0] < where["d"][0]
    assert where["b"][1] != where["c"][1]  # side by side in their column
    assert (where["a"][2], where["b"][2], where["d"][2]) == ("Succeeded", "Executing", "")
    assert len(drawn.edges) == 4 and drawn.width >= where["d"][0] + NODE_W and drawn.height >= NODE_H


def test_an_invalid_definition_is_reported_not_drawn() -> None:
    drawn = dag(json.dumps({"Version": "2020-12-01", "Steps": [_step("a", ["missing"])]}))
    assert drawn.nodes == () and "missing" in drawn.error


def test_step_rows_link_the_job_and_show_the_cache_hit() -> None:
    rows = step_rows(
        [
            {
                "StepName": "Train",
                "StepStatus": "Succeeded",
                "StartTime": 10.0,
                "EndTime": 12.5,
                "Metadata": {"TrainingJob": {"Arn": "arn:aws:sagemaker:us-east-1:1:training-job/pipelines-x-train"}},
                "CacheHitResult": {"SourcePipelineExecutionArn": "arn:source"},
                "AttemptCount": 2,
            }
        ]
    )
    assert rows[0]["link"] == ("/console/training-jobs/pipelines-x-train", "pipelines-x-train")
    assert (rows[0]["seconds"], rows[0]["cache"], rows[0]["attempts"]) == (2.5, "arn:source", 2)
