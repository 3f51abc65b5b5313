"""Linear Learner's metrics, as its metric definitions name them (``test:objective_loss``, ...).

Each is a ``#quality_metric`` line of the training log: the objective loss per epoch on the
training and validation data (``epoch=3, validation binary_classification_cross_entropy_objective``),
and the chosen model's scores on the validation and test channels at the end
(``validation binary_classification_accuracy <score>=0.93``).
"""

from __future__ import annotations

from opensage.images import tabular

BINARY = (
    "binary_classification_accuracy",
    "binary_f_beta",
    "precision",
    "recall",
    "roc_auc_score",
)
MULTICLASS = (
    "multiclass_accuracy",
    "multiclass_top_k_accuracy",
    "macro_precision",
    "macro_recall",
    "macro_f_beta",
    "dcg",
)
REGRESSION = ("mse", "absolute_loss")
MINIMIZED = ("objective_loss", "mse", "absolute_loss")


def metric_definitions() -> list[dict[str, str]]:
    entries = [(channel, m, m) for channel in ("validation", "test") for m in (*BINARY, *MULTICLASS, *REGRESSION)]
    entries += [("test", "objective_loss", "objective_loss")]
    definitions = tabular.quality_definitions(entries)
    for channel in ("train", "validation"):  # per epoch: the best model's objective
        definitions.append(
            {
                "Name": f"{channel}:objective_loss",
                "Regex": rf"#quality_metric: host=\S+, epoch=\S+, {channel} \S+_objective <loss>=(\S+)",
            }
        )
    return definitions


def tuning_metric_names() -> tuple[str, ...]:
    names = [f"{c}:{m}" for c in ("test", "validation") for m in ("objective_loss", *BINARY, *MULTICLASS, *REGRESSION)]
    return tuple(sorted(names))
