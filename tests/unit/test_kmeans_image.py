"""The built-in K-Means by the container contract: a job directory in, model_algo-1 and metrics out."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from opensage.contract import Layout
from opensage.images import recordio, tabular
from opensage.images.kmeans import metric_definitions
from opensage.images.kmeans import serve as kmeans_serve
from opensage.images.kmeans.train import train

TRUTH = np.array([[0, 0, 0], [8, 8, 0], [0, 8, 8]], dtype=np.float32)


def _job(tmp_path: Path, hps: dict[str, str], rows: np.ndarray) -> tabular.Job:
    layout = Layout(tmp_path)
    layout.create()
    for channel, part in (("train", rows[:800]), ("test", rows[800:])):
        layout.channel_dir(channel).mkdir(parents=True, exist_ok=True)
        (layout.channel_dir(channel) / "data.pbr").write_bytes(recordio.write_matrix(part))
    channels = {c: {"ContentType": recordio.CONTENT_TYPE} for c in ("train", "test")}
    return tabular.Job(layout, hps, channels)


def _rows() -> np.ndarray:
    rng = np.random.default_rng(1)
    x = np.vstack([c + rng.normal(scale=0.5, size=(300, 3)) for c in TRUTH]).astype(np.float32)
    rng.shuffle(x)
    return x


def test_three_clusters_are_found_and_scored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    hps = {"k": "3", "feature_dim": "3", "force_dense": "True", "eval_metrics": '["msd", "ssd"]'}
    job = _job(tmp_path, hps, _rows())
    with caplog.at_level(logging.INFO):
        train(job)
    model = kmeans_serve.load_model(job.layout.model_dir)
    body, content_type = kmeans_serve.predict(
        model, json.dumps({"instances": TRUTH.tolist()}).encode(), "application/json", "application/json"
    )
    answers = json.loads(body)["predictions"]
    assert sorted(a["closest_cluster"] for a in answers) == [0.0, 1.0, 2.0]
    assert max(a["distance_to_cluster"] for a in answers) < 0.3
    csv, _ = kmeans_serve.predict(model, b"0,0,0\n8,8,0\n", "text/csv", "text/csv")
    assert len(csv.decode().strip().splitlines()) == 2
    import re

    logged = "\n".join(caplog.messages)
    found = {d["Name"]: re.search(d["Regex"], logged) for d in metric_definitions()}
    assert found["test:msd"] and 0.5 < float(found["test:msd"].group(1)) < 1.0  # 3 dims x 0.5 ** 2 each
    assert found["test:ssd"] and float(found["test:ssd"].group(1)) > float(found["test:msd"].group(1))


@pytest.mark.parametrize(
    ("hps", "says"),
    [
        ({"feature_dim": "3"}, "'k' is a required property"),
        ({"k": "3", "feature_dim": "3", "eval_metrics": '["accuracy"]'}, "eval_metrics may name msd, ssd"),
        ({"k": "2000", "feature_dim": "3"}, "k is 2000 but the train channel has only 800 records"),
        ({"k": "3", "feature_dim": "4"}, "record 0 has 3 features where 4 were expected"),
    ],
)
def test_bad_jobs_fail_saying_what_to_fix(tmp_path: Path, hps: dict[str, str], says: str) -> None:
    with pytest.raises(tabular.ClientError) as caught:
        train(_job(tmp_path, hps, _rows()))
    assert says in str(caught.value)
