"""OpenSage's built-in XGBoost image: SageMaker's XGBoost container in algorithm mode.

``python -m opensage.images.xgboost train`` trains by the container contract; :mod:`.serve` loads
and predicts with the model it writes.
"""

from __future__ import annotations

from opensage.images.xgboost.hyperparameters import EVAL_METRICS

_NUMBER = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"


def metric_definitions() -> list[dict[str, str]]:
    """The container's standard metrics (``train:logloss``, ``validation:auc``, ...) over its log lines.

    Log lines carry tabs as ``#011``, as they appear in CloudWatch.
    """
    return [
        {"Name": f"{channel}:{metric}", "Regex": rf".*\[[0-9]+\].*#011{channel}-{metric}:{_NUMBER}.*"}
        for channel in ("train", "validation")
        for metric in EVAL_METRICS
    ]
