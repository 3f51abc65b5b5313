"""Random Cut Forest training: the container's hyperparameters, a forest of sampled trees, a threshold.

Each of ``num_trees`` trees is built over ``num_samples_per_tree`` records drawn from the ``train``
channel without replacement (all of them when there are fewer). The threshold for labelling a
record an anomaly is three standard deviations above the mean score of the training records (of up
to 10,000 of them), as the container documents. A ``test`` channel with labels (1 for an anomaly) is
scored with ``eval_metrics``: ``accuracy`` and ``precision_recall_fscore`` (precision, recall, F1).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import numpy as np

from opensage.images import tabular
from opensage.images.randomcutforest.forest import build, scores
from opensage.images.tabular import ClientError, Job, Param

log = logging.getLogger(__name__)
SCHEMA: dict[str, Param] = {
    "feature_dim": Param("integer", required=True, minimum=1, maximum=10000),
    "num_samples_per_tree": Param("integer", 256, minimum=1, maximum=2048),
    "num_trees": Param("integer", 100, minimum=50, maximum=1000),
    "eval_metrics": Param("string", '["accuracy", "precision_recall_fscore"]'),
    "mini_batch_size": Param("integer", 1000, minimum=1),
}
THRESHOLD_SAMPLE = 10_000


def _eval_metrics(text: Any) -> list[str]:
    try:
        names = json.loads(text) if isinstance(text, str) and text.strip().startswith("[") else [text]
    except ValueError as exc:
        raise ClientError(f'eval_metrics must be a JSON list such as ["accuracy"]; got {text!r}.') from exc
    bad = [n for n in names if n not in ("accuracy", "precision_recall_fscore")]
    if bad:
        raise ClientError(f"eval_metrics may name accuracy and precision_recall_fscore; {bad!r} is not one of them.")
    return list(names)


def train(job: Job) -> None:
    started = time.monotonic()
    hps = tabular.validate(job.hyperparameters, SCHEMA, "Random Cut Forest")
    metrics = _eval_metrics(hps["eval_metrics"])
    tabular.check_channels(job.channels, ("train", "test"), ("train",), "Random Cut Forest")
    d = int(hps["feature_dim"])
    x, _ = tabular.load_channel(job, "train", supervised=False, feature_dim=d)
    forest = build(x, int(hps["num_trees"]), int(hps["num_samples_per_tree"]))
    rng = np.random.default_rng(1)
    sample = x if len(x) <= THRESHOLD_SAMPLE else x[rng.choice(len(x), THRESHOLD_SAMPLE, replace=False)]
    train_scores = scores(forest, sample)
    threshold = float(train_scores.mean() + 3 * train_scores.std())
    log.info(
        "Built %d trees of %d samples over %d records in %.2f s; score threshold %.4f",
        len(forest.roots),
        forest.sample_size,
        len(x),
        time.monotonic() - started,
        threshold,
    )
    meta = {"algorithm": "randomcutforest", "feature_dim": d, "threshold": threshold}
    tabular.save_model(job.layout.model_dir, meta, forest.arrays())
    if "test" in job.channels:
        xt, yt = tabular.load_channel(job, "test", supervised=True, feature_dim=d)
        assert yt is not None
        _report(job, scores(forest, xt) > threshold, yt > 0.5, metrics)


def _report(job: Job, predicted: np.ndarray, truth: np.ndarray, metrics: list[str]) -> None:
    if "accuracy" in metrics:
        job.quality("test", "accuracy", float(np.mean(predicted == truth)), loss=False)
    if "precision_recall_fscore" in metrics:
        tp = float((predicted & truth).sum())
        precision = tp / max(float(predicted.sum()), 1.0)
        recall = tp / max(float(truth.sum()), 1.0)
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        job.quality("test", "precision", precision, loss=False)
        job.quality("test", "recall", recall, loss=False)
        job.quality("test", "f1", f1, loss=False)
