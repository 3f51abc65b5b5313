"""OpenSage's built-in Random Cut Forest: SageMaker's ``randomcutforest`` image, in NumPy.

``python -m opensage.images.randomcutforest train`` trains by the container contract (:mod:`.train`):
``num_trees`` random cut trees, each over its own sample of ``num_samples_per_tree`` records
(:mod:`.forest`). :mod:`.serve` answers each record's anomaly ``score``. A labelled ``test``
channel (label 1: anomaly) is scored as ``test:f1``, ``test:precision``, ``test:recall`` and
``test:accuracy`` with the container's threshold, three standard deviations above the mean score.
"""

from __future__ import annotations

from opensage.images import tabular

METRICS = ("f1", "precision", "recall", "accuracy")


def metric_definitions() -> list[dict[str, str]]:
    return tabular.quality_definitions([("test", m, m) for m in METRICS])


def tuning_metric_names() -> tuple[str, ...]:
    return ("test:f1",)


__all__ = ["METRICS", "metric_definitions", "tuning_metric_names"]
