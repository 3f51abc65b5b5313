"""Evaluation metrics of the built-in XGBoost algorithm: names, metric definitions, container metrics.

SageMaker's container accepts XGBoost's own metrics plus some it computes itself (``accuracy``,
``f1``, ``r2``, ...; its ``metrics/custom_metrics.py``, with scikit-learn). Those are computed here
with numpy, so that a job never imports scikit-learn.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

# The container's constants/xgb_constants.py.
MAXIMIZE_METRICS = (
    "accuracy",
    "auc",
    "aucpr",
    "balanced_accuracy",
    "f1",
    "f1_binary",
    "f1_macro",
    "map",
    "ndcg",
    "precision",
    "r2",
    "recall",
    "precision_macro",
    "precision_micro",
    "recall_macro",
    "recall_micro",
)
MINIMIZE_METRICS = (
    "aft-nloglik",
    "cox-nloglik",
    "error",
    "gamma-deviance",
    "gamma-nloglik",
    "interval-regression-accuracy",
    "logloss",
    "mae",
    "mape",
    "merror",
    "mlogloss",
    "mphe",
    "mse",
    "poisson-nloglik",
    "rmse",
    "rmsle",
    "tweedie-nloglik",
)
ALL_METRICS = MAXIMIZE_METRICS + MINIMIZE_METRICS
CHANNELS = ("train", "validation")
# A number as the container's metric definitions match it.
NUMBER = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"
# Metrics that take a threshold or cut-off ("error@0.7", "ndcg@5").
THRESHOLD_METRICS = ("error", "ndcg", "map")


def metric_definitions() -> list[dict[str, str]]:
    """The image's standard metric definitions, ``train:<metric>`` and ``validation:<metric>``.

    They match the evaluation lines as CloudWatch shows them, with each tab as ``#011``:
    ``[3]#011train-logloss:0.25431#011validation-logloss:0.27812``.
    """
    return [
        {"Name": f"{channel}:{metric}", "Regex": rf".*\[[0-9]+\].*#011{channel}-{metric}:{NUMBER}.*"}
        for channel in CHANNELS
        for metric in ALL_METRICS
    ]


def tuning_metric_names() -> tuple[str, ...]:
    """Names a tuning job may optimise (the container's algorithm_mode/metrics.py)."""
    return tuple(f"validation:{metric}" for metric in ALL_METRICS)


def is_maximized(metric: str) -> bool:
    return metric.split("@", 1)[0] in MAXIMIZE_METRICS


# --- metrics the container computes itself ------------------------------------------------------


def _class_labels(preds: np.ndarray, objective: str) -> np.ndarray:
    """Predicted classes from transformed predictions (probabilities, margins or class labels)."""
    if preds.ndim == 2:
        return np.argmax(preds, axis=1)
    if objective == "multi:softmax":
        return preds.astype(np.int64)
    threshold = 0.0 if objective == "binary:logitraw" else 0.5
    return (preds > threshold).astype(np.int64)


def _confusion(labels: np.ndarray, predicted: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per class: true positives, predicted count, actual count; and the classes."""
    classes = np.union1d(labels, predicted)
    tp = np.array([np.sum((predicted == c) & (labels == c)) for c in classes], dtype=float)
    pred_n = np.array([np.sum(predicted == c) for c in classes], dtype=float)
    true_n = np.array([np.sum(labels == c) for c in classes], dtype=float)
    return tp, pred_n, true_n, classes


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def _precision_recall(labels: np.ndarray, predicted: np.ndarray, average: str) -> tuple[float, float]:
    tp, pred_n, true_n, classes = _confusion(labels, predicted)
    if average == "micro":
        total_tp = tp.sum()
        return (
            float(total_tp / pred_n.sum()) if pred_n.sum() else 0.0,
            float(total_tp / true_n.sum()) if true_n.sum() else 0.0,
        )
    if average == "binary":
        if not set(classes.tolist()) <= {0, 1}:
            raise ValueError("Target is multiclass but average='binary'. Please choose another average setting.")
        if 1 not in classes:
            return 0.0, 0.0
        positive = classes.tolist().index(1)
        return float(_ratio(tp, pred_n)[positive]), float(_ratio(tp, true_n)[positive])
    return float(_ratio(tp, pred_n).mean()), float(_ratio(tp, true_n).mean())


def _f1(labels: np.ndarray, predicted: np.ndarray, average: str) -> float:
    if average == "binary":
        p, r = _precision_recall(labels, predicted, "binary")
        return 2 * p * r / (p + r) if p + r > 0 else 0.0
    tp, pred_n, true_n, _ = _confusion(labels, predicted)
    return float(_ratio(2 * tp, pred_n + true_n).mean())


def _balanced_accuracy(labels: np.ndarray, predicted: np.ndarray) -> float:
    tp, _, true_n, _ = _confusion(labels, predicted)
    present = true_n > 0
    return float((tp[present] / true_n[present]).mean()) if present.any() else 0.0


def _r2(labels: np.ndarray, preds: np.ndarray) -> float:
    residual = float(np.sum((labels - preds) ** 2))
    total = float(np.sum((labels - labels.mean()) ** 2))
    return 1.0 - residual / total if total > 0 else 0.0


_CLASSIFICATION: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": lambda y, p: float(np.mean(y == p)),
    "balanced_accuracy": _balanced_accuracy,
    "f1": lambda y, p: _f1(y, p, "macro"),
    "f1_binary": lambda y, p: _f1(y, p, "binary"),
    "f1_macro": lambda y, p: _f1(y, p, "macro"),
    "precision": lambda y, p: _precision_recall(y, p, "binary")[0],
    "precision_macro": lambda y, p: _precision_recall(y, p, "macro")[0],
    "precision_micro": lambda y, p: _precision_recall(y, p, "micro")[0],
    "recall": lambda y, p: _precision_recall(y, p, "binary")[1],
    "recall_macro": lambda y, p: _precision_recall(y, p, "macro")[1],
    "recall_micro": lambda y, p: _precision_recall(y, p, "micro")[1],
}
_REGRESSION: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "mse": lambda y, p: float(np.mean((y - p) ** 2)),
    "r2": _r2,
}
CONTAINER_METRICS = tuple(sorted({*_CLASSIFICATION, *_REGRESSION}))


def split_metrics(names: Sequence[str]) -> tuple[list[str], list[str]]:
    """(XGBoost's own metrics, metrics computed here), each in the given order."""
    return [m for m in names if m not in CONTAINER_METRICS], [m for m in names if m in CONTAINER_METRICS]


def custom_metric(names: Sequence[str], objective: str) -> Callable[[np.ndarray, Any], list[tuple[str, float]]]:
    """An ``xgboost.train(custom_metric=...)`` function computing the container metrics ``names``.

    XGBoost passes it transformed predictions (probabilities for ``binary:logistic``).
    """

    def evaluate(preds: np.ndarray, dmatrix: Any) -> list[tuple[str, float]]:
        labels = dmatrix.get_label()
        if preds.size == 0:
            return [(name, 0.0) for name in names]
        results = []
        for name in names:
            if name in _REGRESSION:
                results.append((name, _REGRESSION[name](labels, preds)))
            else:
                results.append((name, _CLASSIFICATION[name](labels.astype(np.int64), _class_labels(preds, objective))))
        return results

    return evaluate
