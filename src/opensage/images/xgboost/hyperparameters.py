"""The built-in XGBoost algorithm's hyperparameters: names, types, ranges and defaults.

Validation follows SageMaker's XGBoost container: every value arrives as a string; an unknown name
or a value of the wrong type or outside its range fails the job with a message naming it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

OBJECTIVES = (
    "binary:logistic",
    "binary:logitraw",
    "binary:hinge",
    "count:poisson",
    "multi:softmax",
    "multi:softprob",
    "rank:pairwise",
    "rank:ndcg",
    "rank:map",
    "reg:linear",
    "reg:squarederror",
    "reg:squaredlogerror",
    "reg:logistic",
    "reg:pseudohubererror",
    "reg:absoluteerror",
    "reg:quantileerror",
    "reg:gamma",
    "reg:tweedie",
    "survival:cox",
    "survival:aft",
)
EVAL_METRICS = (
    "rmse",
    "rmsle",
    "mae",
    "mape",
    "mphe",
    "logloss",
    "error",
    "merror",
    "mlogloss",
    "auc",
    "aucpr",
    "ndcg",
    "map",
    "poisson-nloglik",
    "gamma-nloglik",
    "cox-nloglik",
    "gamma-deviance",
    "tweedie-nloglik",
    "aft-nloglik",
    "interval-regression-accuracy",
    "pre",
)


class HyperparameterError(ValueError):
    """A hyperparameter is unknown or its value is invalid; the message says which and why."""


@dataclass(frozen=True, slots=True)
class Spec:
    kind: type
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    low_open: bool = False
    high_open: bool = False
    check: Callable[[Any], str | None] | None = None


def _metric_list(value: str) -> str | None:
    for metric in value.split(","):
        base = metric.strip().split("@", 1)[0]
        if base not in EVAL_METRICS:
            return f"'{metric.strip()}' is not an XGBoost evaluation metric (one of {', '.join(EVAL_METRICS)})"
    return None


_INF = None
SPECS: dict[str, Spec] = {
    "num_round": Spec(int, 1),
    "booster": Spec(str, choices=("gbtree", "gblinear", "dart")),
    "verbosity": Spec(int, 0, 3),
    "silent": Spec(int, 0, 1),
    "nthread": Spec(int, 1),
    "eta": Spec(float, 0, 1),
    "gamma": Spec(float, 0),
    "max_depth": Spec(int, 0),
    "min_child_weight": Spec(float, 0),
    "max_delta_step": Spec(float, 0),
    "subsample": Spec(float, 0, 1, low_open=True),
    "sampling_method": Spec(str, choices=("uniform", "gradient_based")),
    "colsample_bytree": Spec(float, 0, 1, low_open=True),
    "colsample_bylevel": Spec(float, 0, 1, low_open=True),
    "colsample_bynode": Spec(float, 0, 1, low_open=True),
    "lambda": Spec(float, 0),
    "alpha": Spec(float, 0),
    "tree_method": Spec(str, choices=("auto", "exact", "approx", "hist", "gpu_hist")),
    "sketch_eps": Spec(float, 0, 1, low_open=True, high_open=True),
    "scale_pos_weight": Spec(float, 0, low_open=True),
    "updater": Spec(str),
    "dsplit": Spec(str, choices=("row", "col")),
    "refresh_leaf": Spec(int, 0, 1),
    "process_type": Spec(str, choices=("default", "update")),
    "grow_policy": Spec(str, choices=("depthwise", "lossguide")),
    "max_leaves": Spec(int, 0),
    "max_bin": Spec(int, 2),
    "num_parallel_tree": Spec(int, 1),
    "sample_type": Spec(str, choices=("uniform", "weighted")),
    "normalize_type": Spec(str, choices=("tree", "forest")),
    "rate_drop": Spec(float, 0, 1),
    "one_drop": Spec(int, 0, 1),
    "skip_drop": Spec(float, 0, 1),
    "lambda_bias": Spec(float, 0, 1),
    "tweedie_variance_power": Spec(float, 1, 2, low_open=True, high_open=True),
    "objective": Spec(str, choices=OBJECTIVES),
    "num_class": Spec(int, 1),
    "base_score": Spec(float),
    "eval_metric": Spec(str, check=_metric_list),
    "seed": Spec(int),
    "early_stopping_rounds": Spec(int, 1),
    "csv_weights": Spec(int, 0, 1),
    "save_model_on_termination": Spec(str, choices=("true", "false")),
    "monotone_constraints": Spec(str),
    "interaction_constraints": Spec(str),
    "deterministic_histogram": Spec(str, choices=("true", "false")),
    "single_precision_histogram": Spec(str, choices=("true", "false")),
    "max_cat_to_onehot": Spec(int, 1),
    "huber_slope": Spec(float),
    "quantile_alpha": Spec(str),
    "aft_loss_distribution": Spec(str, choices=("normal", "logistic", "extreme")),
    "aft_loss_distribution_scale": Spec(float, 0, low_open=True),
    "predictor": Spec(str),
    "use_dask_gpu_training": Spec(str, choices=("true", "false")),
    "kfold": Spec(int, 2),
}
# Not xgboost parameters: the container's own switches.
CONTAINER_ONLY = (
    "num_round",
    "early_stopping_rounds",
    "csv_weights",
    "save_model_on_termination",
    "kfold",
    "use_dask_gpu_training",
    "silent",
)
# Names the SageMaker SDK sets for every job; the container ignores them too.
IGNORED_PREFIXES = ("sagemaker_", "_tuning_objective_metric")
DEFAULTS = {"objective": "reg:squarederror", "tree_method": "auto"}


def _convert(name: str, raw: str, spec: Spec) -> Any:
    text = raw.strip()
    try:
        if spec.kind is int:
            as_float = float(text)
            if not as_float.is_integer():
                raise ValueError
            value: Any = int(as_float)
        elif spec.kind is float:
            value = float(text)
        else:
            value = text
    except ValueError as exc:
        kind = "an integer" if spec.kind is int else "a number"
        raise HyperparameterError(f"Hyperparameter {name}: value '{raw}' is not {kind}.") from exc
    if spec.choices and value not in spec.choices:
        raise HyperparameterError(f"Hyperparameter {name}: value '{raw}' is not one of {', '.join(spec.choices)}.")
    low_bad = spec.low is not None and (value <= spec.low if spec.low_open else value < spec.low)
    high_bad = spec.high is not None and (value >= spec.high if spec.high_open else value > spec.high)
    if low_bad or high_bad:
        lo = "(" if spec.low_open else "["
        hi = ")" if spec.high_open else "]"
        bounds = (
            f"{lo}{spec.low if spec.low is not None else '-inf'}, {spec.high if spec.high is not None else 'inf'}{hi}"
        )
        raise HyperparameterError(f"Hyperparameter {name}: value {raw} is not in the range {bounds}.")
    if spec.check is not None:
        problem = spec.check(value)
        if problem:
            raise HyperparameterError(f"Hyperparameter {name}: {problem}.")
    return value


def validate(raw: Mapping[str, str]) -> dict[str, Any]:
    """Typed, validated hyperparameters (with defaults); raises :class:`HyperparameterError`."""
    values: dict[str, Any] = {}
    for name, value in raw.items():
        if name.startswith(IGNORED_PREFIXES):
            continue
        spec = SPECS.get(name)
        if spec is None:
            raise HyperparameterError(
                f"Hyperparameter {name} is not a hyperparameter of the built-in XGBoost algorithm "
                f"(known: {', '.join(sorted(SPECS))})."
            )
        values[name] = _convert(name, str(value), spec)
    if "num_round" not in values:
        raise HyperparameterError("Hyperparameter num_round is required (the number of boosting rounds).")
    for key, default in DEFAULTS.items():
        values.setdefault(key, default)
    objective = values["objective"]
    if objective.startswith("multi:") and "num_class" not in values:
        raise HyperparameterError(f"Hyperparameter num_class is required with objective {objective}.")
    if "num_class" in values and not objective.startswith("multi:"):
        raise HyperparameterError(f"Hyperparameter num_class applies only to multi:* objectives, not {objective}.")
    values.setdefault("nthread", os.cpu_count() or 1)
    return values


def booster_params(values: Mapping[str, Any]) -> dict[str, Any]:
    """What goes to ``xgboost.train(params=...)``."""
    params = {k: v for k, v in values.items() if k not in CONTAINER_ONLY and k != "eval_metric"}
    if "eval_metric" in values:
        params["eval_metric"] = [m.strip() for m in values["eval_metric"].split(",")]
    if params.get("tree_method") == "gpu_hist":
        params["tree_method"], params["device"] = "hist", "cuda"
    if params.get("objective") == "reg:linear":
        params["objective"] = "reg:squarederror"
    return params
