"""OpenSage's built-in XGBoost image: SageMaker's XGBoost container (1.0-1 ... 3.0-5) in algorithm mode.

``python -m opensage.images.xgboost train`` trains by the container contract (:mod:`.train`);
:mod:`.serve` loads the model it writes (or one trained on AWS) and answers requests as the
container's server does. Importing this package is cheap: it does not import XGBoost.
"""

from __future__ import annotations

from opensage.images.xgboost.metrics import metric_definitions, tuning_metric_names

__all__ = ["metric_definitions", "tuning_metric_names"]
