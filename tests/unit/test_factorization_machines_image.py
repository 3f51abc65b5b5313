"""The built-in Factorization Machines by the container contract: sparse records in, interactions learned."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest

from opensage.contract import Layout
from opensage.images import recordio, tabular
from opensage.images.factorization_machines import metric_definitions
from opensage.images.factorization_machines import serve as fm_serve
from opensage.images.factorization_machines.train import train
from opensage.images.tabular import Job

pytest.importorskip("torch")
USERS, ITEMS = 40, 30


def _ratings(n: int = 3000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user, item, rating) triples whose rating is the dot product of hidden 3-d tastes: pure interaction."""
    rng = np.random.default_rng(6)
    taste_u, taste_i = rng.normal(size=(USERS, 3)), rng.normal(size=(ITEMS, 3))
    u, i = rng.integers(0, USERS, n), rng.integers(0, ITEMS, n)
    return u, i, (taste_u[u] * taste_i[i]).sum(axis=1).astype(np.float32)


def _sparse_records(u: np.ndarray, i: np.ndarray, y: np.ndarray) -> bytes:
    """One-hot user and item, written as the SDK's write_spmatrix_to_sparse_tensor does (keys, shape)."""
    cls = recordio.record_class()
    out = []
    for a, b, label in zip(u, i, y, strict=True):
        record = cls()
        tensor = record.features["values"].float32_tensor
        tensor.values.extend([1.0, 1.0])
        tensor.keys.extend([int(a), USERS + int(b)])
        tensor.shape.extend([USERS + ITEMS])
        record.label["values"].float32_tensor.values.append(float(label))
        out.append(recordio.frame(record.SerializeToString()))
    return b"".join(out)


def _job(tmp_path: Path, hps: dict[str, str], labels: np.ndarray) -> Job:
    u, i, _ = _ratings()
    layout = Layout(tmp_path)
    layout.create()
    for channel, part in (("train", slice(0, 2500)), ("test", slice(2500, None))):
        layout.channel_dir(channel).mkdir(parents=True, exist_ok=True)
        (layout.channel_dir(channel) / "part.pbr").write_bytes(_sparse_records(u[part], i[part], labels[part]))
    return Job(layout, hps, {c: {"ContentType": recordio.CONTENT_TYPE} for c in ("train", "test")})


def _metric(caplog: pytest.LogCaptureFixture, name: str) -> float:
    logged = "\n".join(caplog.messages)
    (definition,) = [d for d in metric_definitions() if d["Name"] == name]
    found = re.findall(definition["Regex"], logged)
    assert found, logged[-2000:]
    return float(found[-1])


FAST = {"num_factors": "8", "epochs": "20", "mini_batch_size": "100", "factors_lr": "0.05", "linear_lr": "0.05",
        "factors_init_sigma": "0.1", "feature_dim": str(USERS + ITEMS)}


def test_a_regressor_learns_the_interactions_a_linear_model_cannot(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from sklearn.linear_model import Ridge

    u, i, y = _ratings()
    job = _job(tmp_path, {**FAST, "predictor_type": "regressor"}, y)
    with caplog.at_level(logging.INFO):
        train(job)
    onehot = np.zeros((len(u), USERS + ITEMS))
    onehot[np.arange(len(u)), u] = onehot[np.arange(len(u)), USERS + i] = 1
    linear = Ridge().fit(onehot[:2500], y[:2500]).predict(onehot[2500:])
    linear_rmse = float(np.sqrt(np.mean((linear - y[2500:]) ** 2)))
    ours = _metric(caplog, "test:rmse")
    assert ours < 0.6 * linear_rmse, (ours, linear_rmse)
    assert _metric(caplog, "train:rmse") < 1.0
    model = fm_serve.load_model(job.layout.model_dir)
    body, _ = fm_serve.predict(model, _sparse_records(u[2500:2510], i[2500:2510], y[2500:2510]),
                               recordio.CONTENT_TYPE, "application/json")
    answers = json.loads(body)["predictions"]
    assert [list(a) for a in answers] == [["score"]] * 10


def test_a_binary_classifier_answers_score_and_label(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    u, i, y = _ratings()
    job = _job(tmp_path, {**FAST, "predictor_type": "binary_classifier"}, (y > 0).astype(np.float32))
    with caplog.at_level(logging.INFO):
        train(job)
    assert _metric(caplog, "test:binary_classification_accuracy") > 0.8
    assert _metric(caplog, "test:binary_f_beta") > 0.8
    model = fm_serve.load_model(job.layout.model_dir)
    dense = np.zeros((1, USERS + ITEMS), dtype=np.float32)
    dense[0, [u[0], USERS + i[0]]] = 1
    proto, _ = fm_serve.predict(model, recordio.write_matrix(dense), recordio.CONTENT_TYPE, recordio.CONTENT_TYPE)
    (answer,) = recordio.read_outputs(proto)
    assert set(answer) == {"score", "predicted_label"} and 0 <= answer["score"][0] <= 1
    assert answer["predicted_label"][0] == float(y[0] > 0)
    sparse_json = {"instances": [{"data": {"features": {"keys": [int(u[0]), USERS + int(i[0])],
                                                          "shape": [USERS + ITEMS], "values": [1, 1]}}}]}
    body, _ = fm_serve.predict(model, json.dumps(sparse_json).encode(), "application/json", "application/json")
    assert json.loads(body)["predictions"][0]["score"] == pytest.approx(answer["score"][0], rel=1e-5)


@pytest.mark.parametrize(
    ("hps", "says"),
    [
        ({"feature_dim": "70", "predictor_type": "regressor"}, "'num_factors' is a required property"),
        ({"feature_dim": "70", "num_factors": "4", "predictor_type": "classifier"},
         "'classifier' is not one of ['binary_classifier', 'regressor']"),
        ({"feature_dim": "70", "num_factors": "4", "predictor_type": "regressor", "factors_lr": "-1"},
         "-1 is less than the minimum of 0"),
        ({"feature_dim": "70", "num_factors": "4", "predictor_type": "binary_classifier"}, "must be 0 or 1"),
        ({"feature_dim": "70", "num_factors": "4", "predictor_type": "regressor", "bias_init_method": "uniform"},
         "bias_init_scale is required"),
    ],
)
def test_bad_jobs_fail_saying_what_to_fix(tmp_path: Path, hps: dict[str, str], says: str) -> None:
    _, _, y = _ratings()
    with pytest.raises(tabular.ClientError) as caught:
        train(_job(tmp_path, hps, y))
    assert says in str(caught.value)
