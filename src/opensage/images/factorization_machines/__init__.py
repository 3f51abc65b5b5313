"""OpenSage's built-in Factorization Machines: SageMaker's ``factorization-machines`` image, on PyTorch.

``python -m opensage.images.factorization_machines train`` trains by the container contract
(:mod:`.train`) a degree-2 factorization machine (a global bias, a linear term and ``num_factors``
pairwise factors per feature) over sparse or dense records, as a ``binary_classifier`` or
``regressor``. :mod:`.serve` answers ``score`` (and ``predicted_label`` for a classifier). The
``test`` channel is scored with the container's metric names. Importing this package is cheap: it
does not import PyTorch.
"""

from __future__ import annotations

from opensage.images import tabular

# (channel, metric): the container's metric definitions
METRICS = (
    ("test", "rmse"),
    ("test", "binary_classification_accuracy"),
    ("test", "binary_classification_cross_entropy"),
    ("test", "binary_f_beta"),
    ("train", "rmse"),
    ("train", "binary_classification_accuracy"),
    ("train", "binary_classification_cross_entropy"),
)


def metric_definitions() -> list[dict[str, str]]:
    return tabular.quality_definitions([(c, m, m) for c, m in METRICS])


def tuning_metric_names() -> tuple[str, ...]:
    return tuple(f"{c}:{m}" for c, m in METRICS if c == "test")


__all__ = ["METRICS", "metric_definitions", "tuning_metric_names"]
