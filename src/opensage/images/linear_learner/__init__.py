"""OpenSage's built-in Linear Learner: SageMaker's ``linear-learner`` image, on PyTorch.

``python -m opensage.images.linear_learner train`` trains by the container contract
(:mod:`.train`): binary classifiers, multiclass classifiers and regressors, several models at once
with different learning rates and regularization (``num_models``), the best one chosen on the
validation channel (or the training data) by ``binary_classifier_model_selection_criteria``, with
its decision threshold tuned for that criterion. :mod:`.serve` answers as the container's server.
Importing this package is cheap: it does not import PyTorch.
"""

from __future__ import annotations

from opensage.images.linear_learner.metrics import metric_definitions, tuning_metric_names

__all__ = ["metric_definitions", "tuning_metric_names"]
