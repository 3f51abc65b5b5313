"""OpenSage's built-in PCA: SageMaker's ``pca`` image, on numpy and scikit-learn.

``python -m opensage.images.pca train`` trains by the container contract (:mod:`.train`):
``regular`` mode accumulates the exact covariance matrix over mini-batches and takes its leading
eigenvectors; ``randomized`` mode runs scikit-learn's randomized SVD with ``extra_components``
oversampling. :mod:`.serve` answers each record's ``projection`` onto the ``num_components``
principal components. PCA logs no quality metric (the container exposes none to tuning).
Importing this package is cheap: it does not import scikit-learn.
"""

from __future__ import annotations


def metric_definitions() -> list[dict[str, str]]:
    return []


def tuning_metric_names() -> tuple[str, ...]:
    return ()


__all__ = ["metric_definitions", "tuning_metric_names"]
