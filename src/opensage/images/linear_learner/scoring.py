"""Linear Learner's losses, its model and threshold selection, and its final metrics.

Losses are PyTorch functions of ``[models, batch, outputs]`` margins and the labels, one value per
model and example. Selection and metrics use scikit-learn's (``roc_curve``,
``precision_recall_curve``, ``roc_auc_score``, ``fbeta_score``, ``top_k_accuracy_score``, ``dcg_score``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np


def loss_function(
    torch: Any, hps: Mapping[str, Any], positive_weight: float, class_weights: np.ndarray | None
) -> Callable[[Any, Any], Any]:
    """``f(margins [M, B, K], labels [B]) -> [M, B]`` for the job's ``loss``."""
    f = torch.nn.functional
    loss = hps["loss"]
    margin, quantile = float(hps["margin"]), float(hps["quantile"])
    eps, delta = float(hps["loss_insensitivity"]), float(hps["huber_delta"])
    weights = torch.from_numpy(class_weights) if class_weights is not None else None

    def compute(z: Any, y: Any) -> Any:
        if loss == "softmax_loss":
            log_p = f.log_softmax(z, dim=2)
            target = y.long()[None, :, None].expand(z.shape[0], -1, 1)
            out = -log_p.gather(2, target).squeeze(2)
            return out * weights[y.long()][None, :] if weights is not None else out
        s = z[..., 0]
        yb = y[None, :].expand_as(s)
        if loss == "logistic":
            w = torch.where(yb == 1, positive_weight, 1.0)
            return f.binary_cross_entropy_with_logits(s, yb, reduction="none") * w
        if loss == "hinge_loss":
            w = torch.where(yb == 1, positive_weight, 1.0)
            return torch.clamp(margin - (2 * yb - 1) * s, min=0) * w
        r = yb - s
        if loss == "squared_loss":
            return r**2
        if loss == "absolute_loss":
            return r.abs()
        if loss == "eps_insensitive_squared_loss":
            return torch.clamp(r.abs() - eps, min=0) ** 2
        if loss == "eps_insensitive_absolute_loss":
            return torch.clamp(r.abs() - eps, min=0)
        if loss == "quantile_loss":
            return torch.maximum(quantile * r, (quantile - 1) * r)
        if loss == "huber_loss":
            return f.huber_loss(s, yb, reduction="none", delta=delta if delta > 0 else 1.0)
        raise ValueError(f"unknown loss {loss}")

    return compute


def binary_scores(margins: np.ndarray, loss: str) -> np.ndarray:
    """A binary classifier's ``score``: the probability under logistic loss, the margin under hinge loss."""
    return 1.0 / (1.0 + np.exp(-margins)) if loss == "logistic" else margins


def _threshold_for(
    criterion: str, scores: np.ndarray, labels: np.ndarray, hps: Mapping[str, Any]
) -> tuple[float, float]:
    """``(value of the criterion, threshold)``, larger is better."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    positives, n = float(labels.sum()), len(labels)
    if positives in (0.0, float(n)):  # one class only: nothing to tune
        return float(np.mean(labels == (scores > 0.5))), 0.5
    if criterion == "accuracy":
        fpr, tpr, thresholds = roc_curve(labels, scores)
        accuracy = (tpr * positives + (1 - fpr) * (n - positives)) / n
        best = int(np.argmax(accuracy))
        return float(accuracy[best]), float(min(thresholds[best], np.max(scores)))
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    precision, recall = precision[:-1], recall[:-1]
    if criterion in ("f1", "f_beta"):
        beta2 = 1.0 if criterion == "f1" else float(hps["f_beta"]) ** 2
        with np.errstate(divide="ignore", invalid="ignore"):
            fb = np.nan_to_num((1 + beta2) * precision * recall / (beta2 * precision + recall))
        best = int(np.argmax(fb))
        return float(fb[best]), float(thresholds[best])
    if criterion == "precision_at_target_recall":
        ok = recall >= float(hps["target_recall"])
        value = np.where(ok, precision, -1.0)
    else:  # recall_at_target_precision
        ok = precision >= float(hps["target_precision"])
        value = np.where(ok, recall, -1.0)
    best = int(np.argmax(value))
    return float(value[best]), float(thresholds[best])


def choose(
    hps: Mapping[str, Any], margins: np.ndarray, labels: np.ndarray, losses: np.ndarray
) -> tuple[int, float | None]:
    """The chosen model's index and (for a binary classifier) its decision threshold."""
    if hps["predictor_type"] != "binary_classifier":
        return int(np.nanargmin(losses)), None
    criterion = hps["binary_classifier_model_selection_criteria"]
    default_threshold = 0.5 if hps["loss"] == "logistic" else 0.0
    if criterion in ("loss_function", "cross_entropy_loss"):
        if criterion == "cross_entropy_loss":
            p = np.clip(1.0 / (1.0 + np.exp(-margins[..., 0])), 1e-12, 1 - 1e-12)
            losses = -(labels * np.log(p) + (1 - labels) * np.log(1 - p)).mean(axis=1)
        return int(np.nanargmin(losses)), default_threshold
    best, best_value, best_threshold = 0, -np.inf, default_threshold
    for m in range(margins.shape[0]):
        value, threshold = _threshold_for(criterion, binary_scores(margins[m, :, 0], hps["loss"]), labels, hps)
        if value > best_value:
            best, best_value, best_threshold = m, value, threshold
    return best, best_threshold


def predictions(meta: Mapping[str, Any], raw: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """``(score, predicted_label)`` of raw outputs ``[n, K]`` (labels ``None`` for a regressor)."""
    predictor = meta["predictor_type"]
    if predictor == "regressor":
        return raw[:, 0], None
    if predictor == "multiclass_classifier":
        shifted = np.exp(raw - raw.max(axis=1, keepdims=True))
        probabilities = shifted / shifted.sum(axis=1, keepdims=True)
        return probabilities, probabilities.argmax(axis=1).astype(np.float32)
    score = binary_scores(raw[:, 0], meta["loss"])
    return score, (score > float(meta["threshold"])).astype(np.float32)


def final_metrics(
    hps: Mapping[str, Any], raw: np.ndarray, labels: np.ndarray, threshold: float | None, objective: float
) -> list[tuple[str, float, bool]]:
    """``(metric, value, is a loss)`` of the chosen model on one channel, as the container names them."""
    from sklearn import metrics as m

    meta = {"predictor_type": hps["predictor_type"], "loss": hps["loss"], "threshold": threshold}
    score, predicted = predictions(meta, raw)
    out: list[tuple[str, float, bool]] = [("objective_loss", objective, True)]
    if predicted is None:
        out += [
            ("mse", float(np.mean((score - labels) ** 2)), True),
            ("absolute_loss", float(np.mean(np.abs(score - labels))), True),
        ]
        return out
    beta = float(hps["f_beta"])
    if hps["predictor_type"] == "binary_classifier":
        both = len(np.unique(labels)) == 2
        out += [
            ("binary_classification_accuracy", float(m.accuracy_score(labels, predicted)), False),
            ("binary_f_beta", float(m.fbeta_score(labels, predicted, beta=beta, zero_division=0)), False),
            ("precision", float(m.precision_score(labels, predicted, zero_division=0)), False),
            ("recall", float(m.recall_score(labels, predicted, zero_division=0)), False),
        ]
        if both:
            out.append(("roc_auc_score", float(m.roc_auc_score(labels, score)), False))
        return out
    k = score.shape[1]
    classes = np.arange(k)
    precision, recall, fbeta, _ = m.precision_recall_fscore_support(
        labels, predicted, beta=beta, average="macro", labels=classes, zero_division=0
    )
    onehot = np.eye(k)[labels.astype(np.int64)]
    out += [
        ("multiclass_accuracy", float(m.accuracy_score(labels, predicted)), False),
        (
            "multiclass_top_k_accuracy",
            float(m.top_k_accuracy_score(labels, score, k=min(int(hps["accuracy_top_k"]), k), labels=classes)),
            False,
        ),
        ("macro_precision", float(precision), False),
        ("macro_recall", float(recall), False),
        ("macro_f_beta", float(fbeta), False),
        ("dcg", float(m.dcg_score(onehot, score)), False),
    ]
    return out
