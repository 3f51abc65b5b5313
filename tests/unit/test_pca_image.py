"""The built-in PCA by the container contract: a job directory in, model_algo-1 out, projections served."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from opensage.contract import Layout
from opensage.images import recordio, tabular
from opensage.images.pca import serve as pca_serve
from opensage.images.pca.train import train
from opensage.images.tabular import Job


def _rows(n: int = 1000) -> np.ndarray:
    """Points near a plane in 5 dimensions: two strong directions, three weak ones, offset from 0."""
    rng = np.random.default_rng(3)
    latent = rng.normal(size=(n, 2)) * [5.0, 2.0]
    basis = np.linalg.qr(rng.normal(size=(5, 5)))[0][:2]
    return (latent @ basis + rng.normal(scale=0.05, size=(n, 5)) + 10.0).astype(np.float32)


def _job(tmp_path: Path, hps: dict[str, str], rows: np.ndarray, content_type: str = recordio.CONTENT_TYPE) -> Job:
    layout = Layout(tmp_path)
    layout.create()
    layout.channel_dir("train").mkdir(parents=True, exist_ok=True)
    if content_type == "text/csv":
        body = "\n".join(",".join(f"{v:.6f}" for v in r) for r in rows).encode()
    else:
        body = recordio.write_matrix(rows)
    (layout.channel_dir("train") / "part-0").write_bytes(body)
    return tabular.Job(layout, hps, {"train": {"ContentType": content_type}})


@pytest.mark.parametrize("mode", ["regular", "randomized"])
def test_both_modes_match_scikit_learn(tmp_path: Path, mode: str) -> None:
    from sklearn.decomposition import PCA

    x = _rows()
    hps = {"feature_dim": "5", "num_components": "2", "mini_batch_size": "128", "algorithm_mode": mode}
    job = _job(tmp_path, hps, x)
    train(job)
    model = pca_serve.load_model(job.layout.model_dir)
    body, media = pca_serve.predict(model, recordio.write_matrix(x[:50]), recordio.CONTENT_TYPE, "application/json")
    ours = np.array([p["projection"] for p in json.loads(body)["projections"]])
    theirs = PCA(n_components=2).fit(x.astype(np.float64)).transform(x[:50].astype(np.float64))
    signs = np.sign((ours * theirs).sum(axis=0))  # a component's sign is arbitrary
    assert media == "application/json" and ours.shape == (50, 2)
    np.testing.assert_allclose(ours, theirs * signs, atol=1e-2)
    variance = model[1]["explained_variance"]
    assert variance[0] > variance[1] > 1.0  # the strong directions, largest first


def test_answers_in_every_format_and_without_the_mean(tmp_path: Path) -> None:
    x = _rows(300)
    hps = {"feature_dim": "5", "num_components": "3", "mini_batch_size": "50", "subtract_mean": "false"}
    job = _job(tmp_path, hps, x, content_type="text/csv")
    train(job)
    model = pca_serve.load_model(job.layout.model_dir)
    assert not model[0]["subtract_mean"] and not model[1]["mean"].any()
    csv, media = pca_serve.predict(model, b"10,10,10,10,10\n", "text/csv", "text/csv")
    assert media == "text/csv" and len(csv.decode().split(",")) == 3
    lines, _ = pca_serve.predict(model, b"10,10,10,10,10\n1,2,3,4,5\n", "text/csv", "application/jsonlines")
    assert [list(json.loads(line)) for line in lines.decode().splitlines()] == [["projection"], ["projection"]]
    proto, _ = pca_serve.predict(model, b"10,10,10,10,10\n", "text/csv", recordio.CONTENT_TYPE)
    (answer,) = recordio.read_outputs(proto)
    np.testing.assert_allclose(answer["projection"], [float(v) for v in csv.decode().split(",")], rtol=1e-4)


@pytest.mark.parametrize(
    ("hps", "says"),
    [
        ({"feature_dim": "5", "num_components": "2"}, "'mini_batch_size' is a required property"),
        ({"feature_dim": "5", "num_components": "6", "mini_batch_size": "10"}, "cannot be greater than feature_dim"),
        ({"feature_dim": "5", "num_components": "2", "mini_batch_size": "10", "algorithm_mode": "fast"},
         "'fast' is not one of ['regular', 'randomized']"),
        ({"feature_dim": "4", "num_components": "2", "mini_batch_size": "10"}, "where 4 were expected"),
    ],
)
def test_bad_jobs_fail_saying_what_to_fix(tmp_path: Path, hps: dict[str, str], says: str) -> None:
    with pytest.raises(tabular.ClientError) as caught:
        train(_job(tmp_path, hps, _rows(100)))
    assert says in str(caught.value)
