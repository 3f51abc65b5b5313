"""The built-in k-NN by the container contract: an index from a sample, answers as the container gives them."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest

from opensage.contract import Layout
from opensage.images import recordio, tabular
from opensage.images.knn import metric_definitions
from opensage.images.knn import serve as knn_serve
from opensage.images.knn.train import train
from opensage.images.tabular import Job


def _data(n: int = 1200, regress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    y = x[:, 0] * 2 + x[:, 1] if regress else ((x[:, 0] > 0).astype(int) + (x[:, 1] > 0)).astype(np.float32)
    return x, y.astype(np.float32)


def _job(tmp_path: Path, hps: dict[str, str], x: np.ndarray, y: np.ndarray) -> Job:
    layout = Layout(tmp_path)
    layout.create()
    for channel, part in (("train", slice(0, 1000)), ("test", slice(1000, None))):
        layout.channel_dir(channel).mkdir(parents=True, exist_ok=True)
        (layout.channel_dir(channel) / "data.pbr").write_bytes(recordio.write_matrix(x[part], y[part]))
    return Job(layout, hps, {c: {"ContentType": recordio.CONTENT_TYPE} for c in ("train", "test")})


def _logged_metric(caplog: pytest.LogCaptureFixture, name: str) -> float:
    found = {d["Name"]: re.search(d["Regex"], "\n".join(caplog.messages)) for d in metric_definitions()}
    match = found[name]
    assert match is not None, caplog.messages
    return float(match.group(1))


def test_a_classifier_matches_scikit_learn(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from sklearn.neighbors import KNeighborsClassifier

    x, y = _data()
    job = _job(tmp_path, {"feature_dim": "6", "k": "5", "predictor_type": "classifier", "sample_size": "1000"}, x, y)
    with caplog.at_level(logging.INFO):
        train(job)
    theirs = KNeighborsClassifier(5).fit(x[:1000], y[:1000]).score(x[1000:], y[1000:])
    assert abs(_logged_metric(caplog, "test:accuracy") - theirs) < 0.03
    model = knn_serve.load_model(job.layout.model_dir)
    body, _ = knn_serve.predict(model, recordio.write_matrix(x[1000:1010]), recordio.CONTENT_TYPE, "application/json")
    labels = [p["predicted_label"] for p in json.loads(body)["predictions"]]
    assert len(labels) == 10 and set(labels) <= {0.0, 1.0, 2.0}
    verbose, _ = knn_serve.predict(model, b"0,0,0,0,0,0\n", "text/csv", "application/json; verbose=true")
    (answer,) = json.loads(verbose)["predictions"]
    assert len(answer["distances"]) == 5 == len(answer["labels"])
    assert answer["distances"] == sorted(answer["distances"])  # L2: nearest first
    proto, _ = knn_serve.predict(model, b"0,0,0,0,0,0\n", "text/csv", recordio.CONTENT_TYPE)
    assert recordio.read_outputs(proto)[0]["predicted_label"] == [answer["predicted_label"]]


@pytest.mark.parametrize("metric", ["COSINE", "INNER_PRODUCT"])
def test_a_regressor_with_a_projection_and_other_metrics(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, metric: str
) -> None:
    x, y = _data(regress=True)
    hps = {"feature_dim": "6", "k": "10", "predictor_type": "regressor", "sample_size": "800",
           "dimension_reduction_type": "sign", "dimension_reduction_target": "5", "index_metric": metric}
    job = _job(tmp_path, hps, x, y)
    with caplog.at_level(logging.INFO):
        train(job)
    assert _logged_metric(caplog, "test:mse") < float(np.var(y))  # better than predicting the mean
    model = knn_serve.load_model(job.layout.model_dir)
    assert model.points.shape == (800, 5)
    verbose, _ = knn_serve.predict(model, b"1,1,0,0,0,0\n", "text/csv", "application/json;verbose=true")
    (answer,) = json.loads(verbose)["predictions"]
    assert answer["distances"] == sorted(answer["distances"], reverse=True)  # similarities: largest first


@pytest.mark.parametrize(
    ("hps", "says"),
    [
        ({"feature_dim": "6", "k": "5", "sample_size": "100"}, "'predictor_type' is a required property"),
        ({"feature_dim": "6", "k": "5", "sample_size": "100", "predictor_type": "ranker"},
         "'ranker' is not one of ['classifier', 'regressor']"),
        ({"feature_dim": "6", "k": "5", "sample_size": "100", "predictor_type": "classifier",
          "dimension_reduction_type": "sign"}, "dimension_reduction_target is required"),
        ({"feature_dim": "6", "k": "5", "sample_size": "100", "predictor_type": "classifier",
          "index_type": "faiss.IVFPQ", "index_metric": "COSINE"}, "not supported with faiss.IVFPQ"),
        ({"feature_dim": "6", "k": "50", "sample_size": "20", "predictor_type": "classifier"},
         "k is 50 but the index would hold only 20 records"),
    ],
)
def test_bad_jobs_fail_saying_what_to_fix(tmp_path: Path, hps: dict[str, str], says: str) -> None:
    x, y = _data()
    with pytest.raises(tabular.ClientError) as caught:
        train(_job(tmp_path, hps, x, y))
    assert says in str(caught.value)
