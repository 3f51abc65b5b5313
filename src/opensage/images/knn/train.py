"""k-NN training: the index is a sample of the training data, as SageMaker's k-NN builds it.

1. ``sample_size`` records drawn uniformly without replacement from the ``train`` channel (every
   record when it has fewer), with their labels;
2. with ``dimension_reduction_type``, a random projection to ``dimension_reduction_target``
   dimensions: ``sign`` (entries +-1/sqrt(target)) or ``fjlt`` (a Gaussian Johnson-Lindenstrauss
   projection, scikit-learn's);
3. the ``test`` channel, when given, is answered through the index and scored.

Search is exact (scikit-learn's brute-force neighbours) for every ``index_type``: ``faiss.IVFFlat``
and ``faiss.IVFPQ`` (with ``faiss_index_ivf_nlists`` and ``faiss_index_pq_m``) are accepted and
checked, and their answers are those of the exact search they approximate. ``index_metric`` is
``L2`` (Euclidean distance, nearest first), ``INNER_PRODUCT`` or ``COSINE`` (similarity, largest
first); ``faiss.IVFPQ`` takes ``L2`` only, as the container says.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from opensage.images import tabular
from opensage.images.tabular import ClientError, Job, Param

log = logging.getLogger(__name__)

PQ_M = (1, 2, 3, 4, 8, 12, 16, 20, 24, 28, 32, 40, 48, 56, 64, 96)
SCHEMA: dict[str, Param] = {
    "feature_dim": Param("integer", required=True, minimum=1),
    "k": Param("integer", required=True, minimum=1),
    "predictor_type": Param("string", required=True, choices=("classifier", "regressor")),
    "sample_size": Param("integer", required=True, minimum=1),
    "dimension_reduction_target": Param("integer", None, minimum=1),
    "dimension_reduction_type": Param("string", None, choices=("sign", "fjlt")),
    "faiss_index_ivf_nlists": Param("integer", "auto", auto=True, minimum=1),
    "faiss_index_pq_m": Param("integer", None, minimum=1),
    "index_metric": Param("string", "L2", choices=("L2", "INNER_PRODUCT", "COSINE")),
    "index_type": Param("string", "faiss.Flat", choices=("faiss.Flat", "faiss.IVFFlat", "faiss.IVFPQ")),
    "mini_batch_size": Param("integer", 5000, minimum=1),
}


def _check(hps: dict[str, Any]) -> None:
    d = int(hps["feature_dim"])
    if hps["dimension_reduction_type"] is not None:
        target = hps["dimension_reduction_target"]
        if target is None:
            raise ClientError("dimension_reduction_target is required when dimension_reduction_type is set.")
        if int(target) >= d:
            raise ClientError(f"dimension_reduction_target ({target}) must be less than feature_dim ({d}).")
    if hps["index_type"] == "faiss.IVFPQ":
        if hps["index_metric"] != "L2":
            raise ClientError(f"index_metric {hps['index_metric']} is not supported with faiss.IVFPQ; use L2.")
        if hps["faiss_index_pq_m"] is not None and int(hps["faiss_index_pq_m"]) not in PQ_M:
            raise ClientError(
                f"faiss_index_pq_m must be one of {', '.join(map(str, PQ_M))}; got {hps['faiss_index_pq_m']}."
            )


def projection(kind: str | None, d: int, target: int | None) -> np.ndarray | None:
    """The ``d`` x ``target`` random projection of ``dimension_reduction_type``, or None."""
    if kind is None or target is None:
        return None
    rng = np.random.default_rng(0)
    if kind == "sign":
        return (rng.choice([-1.0, 1.0], size=(d, target)) / np.sqrt(target)).astype(np.float32)
    from sklearn.random_projection import GaussianRandomProjection

    gaussian = GaussianRandomProjection(n_components=target, random_state=0).fit(np.zeros((1, d)))
    return np.asarray(gaussian.components_.T, dtype=np.float32)


def train(job: Job) -> None:
    started = time.monotonic()
    hps = tabular.validate(job.hyperparameters, SCHEMA, "k-NN")
    _check(hps)
    tabular.check_channels(job.channels, ("train", "test"), ("train",), "k-NN")
    d, k = int(hps["feature_dim"]), int(hps["k"])
    x, y = tabular.load_channel(job, "train", supervised=True, feature_dim=d)
    assert y is not None
    size = min(int(hps["sample_size"]), len(x))
    if size < k:
        raise ClientError(f"k is {k} but the index would hold only {size} records; lower k or give more data.")
    chosen = np.sort(np.random.default_rng(0).choice(len(x), size=size, replace=False))
    reduce = projection(hps["dimension_reduction_type"], d, hps["dimension_reduction_target"])
    points = x[chosen] if reduce is None else x[chosen] @ reduce
    meta = {
        "algorithm": "knn",
        "feature_dim": d,
        "k": k,
        "predictor_type": hps["predictor_type"],
        "index_metric": hps["index_metric"],
        "index_type": hps["index_type"],
    }
    arrays = {"points": points.astype(np.float32), "labels": y[chosen].astype(np.float32)}
    if reduce is not None:
        arrays["projection"] = reduce
    log.info(
        "Built a %s index of %d of %d records (%d dimensions, %s) in %.2f s",
        hps["index_type"],
        size,
        len(x),
        points.shape[1],
        hps["index_metric"],
        time.monotonic() - started,
    )
    tabular.save_model(job.layout.model_dir, meta, arrays)
    if "test" in job.channels:
        xt, yt = tabular.load_channel(job, "test", supervised=True, feature_dim=d)
        assert yt is not None
        predicted = Index(meta, arrays).predict(xt)[0]
        if hps["predictor_type"] == "classifier":
            job.quality("test", "accuracy", float(np.mean(predicted == yt)), loss=False)
        else:
            job.quality("test", "mse", float(np.mean((predicted - yt) ** 2)), loss=True)


class Index:
    """A trained model's neighbours search and its predictions."""

    def __init__(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.meta, self.labels = meta, arrays["labels"]
        self.reduce = arrays.get("projection")
        self.metric = str(meta["index_metric"])
        self.points = arrays["points"].astype(np.float32)
        self._nn: Any = None
        if self.metric != "INNER_PRODUCT":
            from sklearn.neighbors import NearestNeighbors

            metric = "cosine" if self.metric == "COSINE" else "euclidean"
            self._nn = NearestNeighbors(n_neighbors=int(meta["k"]), algorithm="brute", metric=metric).fit(self.points)

    def search(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(the ``k`` neighbours' indexes, their distances or similarities), best first, per row."""
        q = (x if self.reduce is None else x @ self.reduce).astype(np.float32)
        k = int(self.meta["k"])
        if self._nn is None:  # inner product: largest first
            scores = q @ self.points.T
            top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
            picked = np.take_along_axis(scores, top, axis=1)
            order = np.argsort(-picked, axis=1)
            return np.take_along_axis(top, order, axis=1), np.take_along_axis(picked, order, axis=1)
        distances, index = self._nn.kneighbors(q)
        if self.metric == "COSINE":
            return index, 1.0 - distances  # cosine similarity, largest first
        return index, distances

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(predicted labels, neighbours' distances, neighbours' labels)."""
        index, distances = self.search(x)
        labels = self.labels[index]
        if self.meta["predictor_type"] == "regressor":
            return labels.mean(axis=1), distances, labels
        return np.array([_majority(row) for row in labels], dtype=np.float32), distances, labels


def _majority(labels: np.ndarray) -> float:
    """The most frequent label; a tie goes to the tied label of the nearest neighbour."""
    values, counts = np.unique(labels, return_counts=True)
    best = set(values[counts == counts.max()].tolist())
    return float(next(v for v in labels.tolist() if v in best))
