"""PCA training: hyperparameters as the container documents them, its two modes.

* ``regular``: the exact covariance matrix (``feature_dim`` x ``feature_dim``), summed over
  ``mini_batch_size``-record batches of the ``train`` channel in float64, then its leading
  ``num_components`` eigenvectors (numpy's ``eigh``);
* ``randomized``: scikit-learn's randomized SVD of the (centred) data with ``extra_components``
  oversampling (-1: ``max(10, num_components)``), for data with many features.

``subtract_mean`` (default true) centres the data by its mean in training and at inference. The
model holds the components (one per row, the largest first, each signed so that its largest entry
is positive), the mean, the singular values and the explained variance.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from opensage.compute import cores
from opensage.images import tabular
from opensage.images.tabular import ClientError, Job, Param

log = logging.getLogger(__name__)

SCHEMA: dict[str, Param] = {
    "feature_dim": Param("integer", required=True, minimum=1),
    "mini_batch_size": Param("integer", required=True, minimum=1),
    "num_components": Param("integer", required=True, minimum=1),
    "algorithm_mode": Param("string", "regular", choices=("regular", "randomized")),
    "extra_components": Param("integer", -1, minimum=-1),
    "subtract_mean": Param("boolean", True),
}


def train(job: Job) -> None:
    started = time.monotonic()
    hps = tabular.validate(job.hyperparameters, SCHEMA, "PCA")
    tabular.check_channels(job.channels, ("train", "test"), ("train",), "PCA")
    d, k = int(hps["feature_dim"]), int(hps["num_components"])
    if k > d:
        raise ClientError(f"num_components ({k}) cannot be greater than feature_dim ({d}); lower num_components.")
    x, _ = tabular.load_channel(job, "train", supervised=False, feature_dim=d)
    if len(x) < 2:
        raise ClientError(f"The train channel has {len(x)} record; PCA needs at least 2.")
    center = bool(hps["subtract_mean"])
    mean = x.mean(axis=0, dtype=np.float64) if center else np.zeros(d)
    if hps["algorithm_mode"] == "regular":
        components, variance = _regular(x, mean, k, int(hps["mini_batch_size"]))
    else:
        extra = int(hps["extra_components"])
        components, variance = _randomized(x, mean, k, max(10, k) if extra == -1 else extra)
    components = _signed(components)
    total = _total_variance(x, mean)
    singular = np.sqrt(np.maximum(variance, 0.0) * (len(x) - 1))
    log.info(
        "%s PCA: %d components of %d features from %d records in %.2f s; explained variance ratio %.4f",
        hps["algorithm_mode"].capitalize(),
        k,
        d,
        len(x),
        time.monotonic() - started,
        float(variance.sum() / total) if total > 0 else 1.0,
    )
    meta = {"algorithm": "pca", "feature_dim": d, "num_components": k, "subtract_mean": center}
    arrays = {
        "components": components.astype(np.float32),
        "mean": mean.astype(np.float32),
        "singular_values": singular.astype(np.float32),
        "explained_variance": variance.astype(np.float32),
    }
    tabular.save_model(job.layout.model_dir, meta, arrays)


def _regular(x: np.ndarray, mean: np.ndarray, k: int, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """The top ``k`` eigenvectors (rows) and eigenvalues of the covariance, summed batch by batch."""
    d = x.shape[1]
    scatter = np.zeros((d, d))
    for start in range(0, len(x), batch):
        part = x[start : start + batch].astype(np.float64) - mean
        scatter += part.T @ part
    values, vectors = np.linalg.eigh(scatter / (len(x) - 1))
    order = np.argsort(values)[::-1][:k]
    return vectors[:, order].T, values[order]


def _randomized(x: np.ndarray, mean: np.ndarray, k: int, oversamples: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.utils.extmath import randomized_svd
    from threadpoolctl import threadpool_limits

    with threadpool_limits(max(1, cores.usable_cores())):
        _, s, vt = randomized_svd(x.astype(np.float64) - mean, k, n_oversamples=oversamples, random_state=0)
    return vt, s**2 / (len(x) - 1)


def _signed(components: np.ndarray) -> np.ndarray:
    """Each component with its largest-magnitude entry positive (the eigenvectors' sign is arbitrary)."""
    flip = np.sign(components[np.arange(len(components)), np.abs(components).argmax(axis=1)])
    return components * np.where(flip == 0, 1.0, flip)[:, None]


def _total_variance(x: np.ndarray, mean: np.ndarray) -> float:
    return float(((x.astype(np.float64) - mean) ** 2).sum() / (len(x) - 1))


def project(arrays: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` projected onto the model's components (centred first when it subtracts the mean)."""
    return (x.astype(np.float64) - arrays["mean"]) @ arrays["components"].T.astype(np.float64)
