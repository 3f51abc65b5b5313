"""OpenSage's built-in K-Means: SageMaker's ``kmeans`` image, on scikit-learn.

``python -m opensage.images.kmeans train`` trains by the container contract (:mod:`.train`) as
SageMaker's algorithm does: a mini-batch pass over the data with ``k * extra_center_factor``
centers, then a local Lloyd's run that reduces them to ``k`` (weighted by how many records each
center took). :mod:`.serve` answers ``closest_cluster`` and ``distance_to_cluster`` per record.
Importing this package is cheap: it does not import scikit-learn.
"""

from __future__ import annotations

from opensage.images import tabular

METRICS = ("msd", "ssd")  # mean and sum of the squared distances to the closest center


def metric_definitions() -> list[dict[str, str]]:
    return tabular.quality_definitions([("test", m, m) for m in METRICS])


def tuning_metric_names() -> tuple[str, ...]:
    return tuple(f"test:{m}" for m in METRICS)


__all__ = ["METRICS", "metric_definitions", "tuning_metric_names"]
