"""Linear Learner's hyperparameters: names, defaults and ranges as the container documents them.

``auto`` values are resolved in :func:`resolve` as the container does: ``loss`` from the
predictor type, ``optimizer`` Adam, ``num_models`` 32 (1 under a tuning job), the learning rates
and weight decays of the parallel models spread over a grid around Adam's usual values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opensage.images import tabular
from opensage.images.tabular import Param

PREDICTORS = ("binary_classifier", "multiclass_classifier", "regressor")
LOSSES = (
    "logistic",
    "squared_loss",
    "absolute_loss",
    "hinge_loss",
    "eps_insensitive_squared_loss",
    "eps_insensitive_absolute_loss",
    "quantile_loss",
    "huber_loss",
    "softmax_loss",
    "auto",
)
CRITERIA = (
    "accuracy",
    "f_beta",
    "precision_at_target_recall",
    "recall_at_target_precision",
    "loss_function",
    "f1",
    "cross_entropy_loss",
)
_CLASSIFIER_LOSSES = ("logistic", "hinge_loss", "softmax_loss")
_POSITIVE: dict[str, Any] = {"exclusive_minimum": 0.0}
_UNIT: dict[str, Any] = {"exclusive_minimum": 0.0, "exclusive_maximum": 1.0}
_UNIT_LEFT: dict[str, Any] = {"minimum": 0.0, "exclusive_maximum": 1.0}

SCHEMA: dict[str, Param] = {
    "feature_dim": Param("integer", minimum=1, required=True),
    "predictor_type": Param("string", choices=PREDICTORS, required=True),
    "mini_batch_size": Param("integer", 1000, minimum=1),
    "epochs": Param("integer", 15, minimum=1),
    "num_classes": Param("integer", None, minimum=3, maximum=1000000),
    "accuracy_top_k": Param("integer", 3, minimum=1, maximum=1000000),
    "balance_multiclass_weights": Param("boolean", False),
    "beta_1": Param("number", "auto", auto=True, **_UNIT_LEFT),
    "beta_2": Param("number", "auto", auto=True, **_UNIT_LEFT),
    "bias_lr_mult": Param("number", "auto", auto=True, **_POSITIVE),
    "bias_wd_mult": Param("number", "auto", auto=True, minimum=0.0),
    "binary_classifier_model_selection_criteria": Param("string", "accuracy", choices=CRITERIA),
    "early_stopping_patience": Param("integer", 3, minimum=1),
    "early_stopping_tolerance": Param("number", 0.001, **_POSITIVE),
    "f_beta": Param("number", 1.0, **_POSITIVE),
    "huber_delta": Param("number", 1.0, minimum=0.0),
    "init_bias": Param("number", 0.0),
    "init_method": Param("string", "uniform", choices=("uniform", "normal")),
    "init_scale": Param("number", 0.07, **_POSITIVE),
    "init_sigma": Param("number", 0.01, **_POSITIVE),
    "l1": Param("number", "auto", auto=True, minimum=0.0),
    "learning_rate": Param("number", "auto", auto=True, **_POSITIVE),
    "loss": Param("string", "auto", choices=LOSSES),
    "loss_insensitivity": Param("number", 0.01, **_POSITIVE),
    "lr_scheduler_factor": Param("number", "auto", auto=True, **_UNIT),
    "lr_scheduler_minimum_lr": Param("number", "auto", auto=True, **_POSITIVE),
    "lr_scheduler_step": Param("integer", "auto", auto=True, minimum=1),
    "margin": Param("number", 1.0, minimum=0.0),
    "momentum": Param("number", "auto", auto=True, **_UNIT_LEFT),
    "normalize_data": Param("boolean", True),
    "normalize_label": Param("boolean", "auto", auto=True),
    "num_calibration_samples": Param("integer", 10000000, minimum=1),
    "num_models": Param("integer", "auto", auto=True, minimum=1),
    "num_point_for_scaler": Param("integer", 10000, minimum=1),
    "optimizer": Param("string", "auto", choices=("sgd", "adam", "rmsprop", "auto")),
    "positive_example_weight_mult": Param("string", "1.0"),
    "quantile": Param("number", 0.5, **_UNIT),
    "target_precision": Param("number", 0.8, **_UNIT),
    "target_recall": Param("number", 0.8, **_UNIT),
    "unbias_data": Param("boolean", "auto", auto=True),
    "unbias_label": Param("boolean", "auto", auto=True),
    "use_bias": Param("boolean", True),
    "use_lr_scheduler": Param("boolean", True),
    "wd": Param("number", "auto", auto=True, minimum=0.0),
}


def _invalid(message: str) -> tabular.ClientError:
    return tabular.ClientError(
        f"Unable to initialize the algorithm. Failed to validate input hyperparameters. (caused by ValidationError)"
        f"\n\nCaused by: {message}"
    )


def validate(given: Mapping[str, Any], *, tuning: bool = False) -> dict[str, Any]:
    """Typed, checked hyperparameters with the ``auto`` ones resolved.

    Raises:
        ClientError: in the container's words, naming the hyperparameter and what it accepts.
    """
    hps = tabular.validate(given, SCHEMA, "Linear Learner")
    predictor = hps["predictor_type"]
    if predictor == "multiclass_classifier" and hps["num_classes"] is None:
        raise _invalid("num_classes is required when predictor_type is multiclass_classifier (an integer >= 3).")
    loss = hps["loss"]
    if loss == "auto":
        loss = {"binary_classifier": "logistic", "multiclass_classifier": "softmax_loss"}.get(predictor, "squared_loss")
    elif predictor == "binary_classifier" and loss not in ("logistic", "hinge_loss"):
        raise _invalid(f"loss {loss} cannot train a binary_classifier; use logistic, hinge_loss or auto.")
    elif predictor == "multiclass_classifier" and loss != "softmax_loss":
        raise _invalid(f"loss {loss} cannot train a multiclass_classifier; use softmax_loss or auto.")
    elif predictor == "regressor" and loss in _CLASSIFIER_LOSSES:
        raise _invalid(f"loss {loss} cannot train a regressor; use a regression loss (squared_loss, ...) or auto.")
    hps["loss"] = loss
    weight = str(hps["positive_example_weight_mult"])
    if weight not in ("auto", "balanced"):
        try:
            if float(weight) <= 0:
                raise ValueError
        except ValueError:
            raise _invalid(
                f"positive_example_weight_mult '{weight}' is not a float greater than 0, 'auto' or 'balanced'."
            ) from None
    if hps["optimizer"] == "auto":
        hps["optimizer"] = "adam"
    hps["num_models"] = 1 if tuning else (32 if hps["num_models"] == "auto" else hps["num_models"])
    auto_defaults = {
        "beta_1": 0.9,
        "beta_2": 0.999,
        "momentum": 0.0,
        "bias_lr_mult": 10.0,
        "bias_wd_mult": 0.0,
        "lr_scheduler_factor": 0.99,
        "lr_scheduler_minimum_lr": 1e-5,
        "lr_scheduler_step": 100,
    }
    for name, value in auto_defaults.items():
        if hps[name] == "auto":
            hps[name] = value
    if hps["normalize_label"] == "auto":
        hps["normalize_label"] = predictor == "regressor"
    for name in ("unbias_data", "unbias_label"):
        if hps[name] == "auto":
            hps[name] = hps["use_bias"]
    return hps


def model_grid(hps: Mapping[str, Any]) -> list[tuple[float, float, float]]:
    """``(learning_rate, wd, l1)`` of each parallel model: the given values, else a grid of them."""
    n = int(hps["num_models"])
    lrs = (
        [hps["learning_rate"]] if hps["learning_rate"] != "auto" else [0.1, 0.03, 0.01, 0.003, 0.3, 0.001, 1.0, 0.0003]
    )
    wds = [hps["wd"]] if hps["wd"] != "auto" else [1e-6, 1e-3, 1e-2, 1e-4]
    l1s = [hps["l1"]] if hps["l1"] != "auto" else [0.0]
    combos = [(lr, wd, l1) for wd in wds for l1 in l1s for lr in lrs]
    return [combos[i % len(combos)] for i in range(n)]
