"""The built-in Random Cut Forest by the container contract: anomalies score high, labelled tests are scored."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest

from opensage.contract import Layout
from opensage.images import recordio, tabular
from opensage.images.randomcutforest import metric_definitions
from opensage.images.randomcutforest import serve as rcf_serve
from opensage.images.randomcutforest.forest import build, scores
from opensage.images.randomcutforest.train import train
from opensage.images.tabular import Job


def _data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ordinary points on a noisy circle; anomalies inside it and far out (hard for a box-based detector)."""
    rng = np.random.default_rng(8)
    angle = rng.uniform(0, 2 * np.pi, 3000)
    ring = np.c_[np.cos(angle), np.sin(angle)] * 5 + rng.normal(scale=0.2, size=(3000, 2))
    odd = np.vstack([rng.normal(scale=0.3, size=(15, 2)), rng.normal(size=(15, 2)) + [12, 0]])
    test = np.vstack([ring[2500:], odd]).astype(np.float32)
    return ring[:2500].astype(np.float32), test, np.r_[np.zeros(500), np.ones(30)].astype(np.float32)


def test_anomalies_score_high_as_robustly_as_an_isolation_forest() -> None:
    from sklearn.ensemble import IsolationForest
    from sklearn.metrics import roc_auc_score

    x, test, labels = _data()
    ours = roc_auc_score(labels, scores(build(x, 100, 256), test))
    theirs = roc_auc_score(labels, -IsolationForest(random_state=0).fit(x).score_samples(test))
    assert ours > 0.95 and ours >= theirs - 0.03, (ours, theirs)


def test_a_job_scores_its_labelled_test_channel(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    x, test, labels = _data()
    layout = Layout(tmp_path)
    layout.create()
    for channel, body in (("train", recordio.write_matrix(x)), ("test", recordio.write_matrix(test, labels))):
        layout.channel_dir(channel).mkdir(parents=True, exist_ok=True)
        (layout.channel_dir(channel) / "part.pbr").write_bytes(body)
    job = Job(layout, {"feature_dim": "2", "num_trees": "50"}, {c: {} for c in ("train", "test")})
    with caplog.at_level(logging.INFO):
        train(job)
    logged = "\n".join(caplog.messages)
    found = {d["Name"]: re.search(d["Regex"], logged) for d in metric_definitions()}
    assert all(found.values()), logged[-1500:]
    assert float(found["test:f1"].group(1)) > 0.6 and float(found["test:accuracy"].group(1)) > 0.95  # type: ignore[union-attr]
    model = rcf_serve.load_model(layout.model_dir)
    body, media = rcf_serve.predict(model, b"5,0\n0,0\n", "text/csv", "application/json")
    first, second = (s["score"] for s in json.loads(body)["scores"])
    assert media == "application/json" and second > first
    proto, _ = rcf_serve.predict(model, b"5,0\n", "text/csv", recordio.CONTENT_TYPE)
    assert recordio.read_outputs(proto)[0]["score"] == [pytest.approx(first, rel=1e-5)]


@pytest.mark.parametrize(
    ("hps", "says"),
    [
        ({}, "'feature_dim' is a required property"),
        ({"feature_dim": "2", "num_trees": "10"}, "10 is less than the minimum of 50"),
        ({"feature_dim": "2", "num_samples_per_tree": "5000"}, "5000 is greater than the maximum of 2048"),
        ({"feature_dim": "2", "eval_metrics": '["auc"]'}, "eval_metrics may name accuracy"),
    ],
)
def test_bad_jobs_fail_saying_what_to_fix(tmp_path: Path, hps: dict[str, str], says: str) -> None:
    layout = Layout(tmp_path)
    layout.create()
    layout.channel_dir("train").mkdir(parents=True, exist_ok=True)
    (layout.channel_dir("train") / "part.pbr").write_bytes(recordio.write_matrix(_data()[0]))
    with pytest.raises(tabular.ClientError) as caught:
        train(Job(layout, hps, {"train": {}}))
    assert says in str(caught.value)
