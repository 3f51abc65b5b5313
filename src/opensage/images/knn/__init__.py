"""OpenSage's built-in k-NN: SageMaker's ``knn`` image, on scikit-learn.

``python -m opensage.images.knn train`` trains by the container contract (:mod:`.train`): a
uniform sample of ``sample_size`` labelled records, optionally reduced to
``dimension_reduction_target`` dimensions by a random projection, becomes the index; the ``test``
channel is scored as ``test:accuracy`` (classifier) or ``test:mse`` (regressor). :mod:`.serve`
answers each record's ``predicted_label`` (the neighbours' majority label or mean), and in verbose
mode (``Accept: application/json; verbose=true``) the neighbours' ``distances`` and ``labels``.
Importing this package is cheap: it does not import scikit-learn.
"""

from __future__ import annotations

from opensage.images import tabular

METRICS = (("accuracy", False), ("mse", True))  # (name, lower is better)


def metric_definitions() -> list[dict[str, str]]:
    return tabular.quality_definitions([("test", m, m) for m, _ in METRICS])


def tuning_metric_names() -> tuple[str, ...]:
    return tuple(f"test:{m}" for m, _ in METRICS)


__all__ = ["METRICS", "metric_definitions", "tuning_metric_names"]
