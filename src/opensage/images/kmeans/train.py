"""K-Means training: hyperparameters as the container documents them, SageMaker's two stages.

1. ``epochs`` passes of mini-batch k-means (``mini_batch_size`` records a batch) over the ``train``
   channel with ``k * extra_center_factor`` centers (``extra_center_factor`` auto: as many as the
   data allows, at most 10 x ``k``), seeded by ``init_method`` (``random`` or ``kmeans++``);
2. a local Lloyd's run (``local_lloyd_init_method``, ``local_lloyd_num_trials``,
   ``local_lloyd_max_iter``, ``local_lloyd_tol``) over those centers, each weighted by the records it
   took, down to ``k``.

The ``test`` channel, when given, is scored with ``eval_metrics`` (``msd``, ``ssd``) and logged as the
container does (``test:msd``, ...). The model is ``k`` centers of ``feature_dim`` values.

LIMITATIONS: ``half_life_time_size`` is accepted and not used (every batch weighs the same); one
instance trains (the data of every host's ``train`` channel, on ``algo-1``).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import numpy as np

from opensage.compute import cores
from opensage.images import tabular
from opensage.images.kmeans import METRICS
from opensage.images.tabular import ClientError, Job, Param

log = logging.getLogger(__name__)

SCHEMA: dict[str, Param] = {
    "feature_dim": Param("integer", required=True, minimum=1),
    "force_dense": Param("boolean", True),  # what the SDK's KMeans sends; records are dense here anyway
    "k": Param("integer", required=True, minimum=1),
    "epochs": Param("integer", 1, minimum=1),
    "eval_metrics": Param("string", '["msd"]'),
    "extra_center_factor": Param("integer", "auto", auto=True, minimum=1),
    "half_life_time_size": Param("integer", 0, minimum=0),
    "init_method": Param("string", "random", choices=("random", "kmeans++")),
    "local_lloyd_init_method": Param("string", "kmeans++", choices=("random", "kmeans++")),
    "local_lloyd_max_iter": Param("integer", 300, minimum=1),
    "local_lloyd_num_trials": Param("integer", "auto", auto=True, minimum=1),
    "local_lloyd_tol": Param("number", 0.0001, minimum=0.0),
    "mini_batch_size": Param("integer", 5000, minimum=1),
}


def _eval_metrics(text: Any) -> list[str]:
    try:
        names = json.loads(text) if isinstance(text, str) else list(text)
    except ValueError as exc:
        raise ClientError(f'eval_metrics must be a JSON list such as ["msd", "ssd"]; got {text!r}.') from exc
    bad = [n for n in names if n not in METRICS]
    if not isinstance(names, list) or bad:
        raise ClientError(f"eval_metrics may name {', '.join(METRICS)}; {bad or names!r} is not one of them.")
    return names


def _init(method: str) -> str:
    return "k-means++" if method == "kmeans++" else "random"


def train(job: Job) -> None:
    started = time.monotonic()
    hps = tabular.validate(job.hyperparameters, SCHEMA, "K-Means")
    metrics = _eval_metrics(hps["eval_metrics"])
    tabular.check_channels(job.channels, ("train", "test"), ("train",), "K-Means")
    d, k = int(hps["feature_dim"]), int(hps["k"])
    x, _ = tabular.load_channel(job, "train", supervised=False, feature_dim=d)
    x = x.astype(np.float64)
    if len(x) < k:
        raise ClientError(f"k is {k} but the train channel has only {len(x)} records; give at least k records.")
    from sklearn.cluster import KMeans, MiniBatchKMeans
    from threadpoolctl import threadpool_limits

    factor = hps["extra_center_factor"]
    extra = min(len(x), k * (10 if factor == "auto" else int(factor)))
    batch = min(int(hps["mini_batch_size"]), len(x))
    with threadpool_limits(max(1, cores.usable_cores())):
        stage = MiniBatchKMeans(
            n_clusters=extra,
            init=_init(hps["init_method"]),
            batch_size=batch,
            max_iter=int(hps["epochs"]),
            n_init=1,
            random_state=0,
        ).fit(x)
        weights = np.bincount(stage.labels_, minlength=extra).astype(np.float64)
        used = weights > 0
        centers, weights = stage.cluster_centers_[used], weights[used]
        if len(centers) < k:
            raise ClientError(f"The data has fewer than k={k} distinct points; lower k.")
        trials = hps["local_lloyd_num_trials"]
        final = KMeans(
            n_clusters=k,
            init=_init(hps["local_lloyd_init_method"]),
            n_init=10 if trials == "auto" else int(trials),
            max_iter=int(hps["local_lloyd_max_iter"]),
            tol=float(hps["local_lloyd_tol"]),
            random_state=0,
        ).fit(centers, sample_weight=weights)
    means = final.cluster_centers_.astype(np.float32)
    log.info(
        "Trained %d centers (from %d in the mini-batch stage) on %d records in %.2f s",
        k,
        len(centers),
        len(x),
        time.monotonic() - started,
    )
    tabular.save_model(job.layout.model_dir, {"algorithm": "kmeans", "feature_dim": d, "k": k}, {"centers": means})
    if "test" in job.channels:
        xt, _ = tabular.load_channel(job, "test", supervised=False, feature_dim=d)
        squared = distances(means, xt) ** 2
        values = {"msd": float(squared.mean()), "ssd": float(squared.sum())}
        for name in metrics:
            job.quality("test", name, values[name], loss=True)


def distances(centers: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Each row's Euclidean distance to its closest center."""
    return np.sqrt(closest(centers, x)[1])


def closest(centers: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(each row's closest center, its squared distance to it)."""
    x = x.astype(np.float64)
    c = centers.astype(np.float64)
    squared = (x * x).sum(axis=1)[:, None] - 2.0 * x @ c.T + (c * c).sum(axis=1)[None, :]
    index = squared.argmin(axis=1)
    return index, np.maximum(squared[np.arange(len(x)), index], 0.0)
