"""The built-in XGBoost algorithm's hyperparameters: names, types, ranges, dependencies.

Validation follows SageMaker's container (``algorithm_mode/hyperparameter_validation.py`` over the
algorithm toolkit): every value arrives as a string; aliases (``learning_rate``...) are accepted; an
unknown name, an unparsable value, a value out of range or a forbidden combination fails the job
with a message that names the hyperparameter and the value. Messages keep the container's wording
("Missing required hyperparameter: num_round", "Extraneous hyperparameter found: ...") and say what
to change.
"""

from __future__ import annotations

import ast
import difflib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from opensage.images.xgboost import metrics

log = logging.getLogger(__name__)

OBJECTIVES = (
    "binary:hinge",
    "binary:logistic",
    "binary:logitraw",
    "count:poisson",
    "multi:softmax",
    "multi:softprob",
    "rank:map",
    "rank:ndcg",
    "rank:pairwise",
    "reg:absoluteerror",
    "reg:gamma",
    "reg:linear",
    "reg:logistic",
    "reg:pseudohubererror",
    "reg:squarederror",
    "reg:squaredlogerror",
    "reg:tweedie",
    "survival:aft",
    "survival:cox",
)
TREE_METHODS = ("auto", "exact", "approx", "hist", "gpu_hist")
UPDATERS = (
    "grow_colmaker",
    "distcol",
    "grow_histmaker",
    "grow_local_histmaker",
    "grow_skmaker",
    "grow_quantile_histmaker",
    "sync",
    "refresh",
    "prune",
    "shotgun",
    "coord_descent",
)
ALIASES = {"learning_rate": "eta", "min_split_loss": "gamma", "reg_lambda": "lambda", "reg_alpha": "alpha"}
# The container's own switches, not XGBoost parameters.
CONTAINER_ONLY = frozenset(
    {
        "num_round",
        "csv_weights",
        "early_stopping_rounds",
        "save_model_on_termination",
        "_tuning_objective_metric",
        "_kfold",
        "_num_cv_round",
        "use_dask_gpu_training",
        "eval_metric",
    }
)
# Accepted by the 1.x containers but removed in XGBoost 2.0: validated, then left out.
REMOVED_IN_XGBOOST_2 = frozenset(
    {
        "silent",
        "predictor",
        "dsplit",
        "lambda_bias",
        "prob_buffer_row",
        "single_precision_histogram",
        "deterministic_histogram",
    }
)
# The SageMaker SDK adds these in framework (script) mode; algorithm mode on AWS never sees them.
SCRIPT_MODE_KEY = "sagemaker_program"
SDK_PREFIX = "sagemaker_"


class HyperparameterError(ValueError):
    """A hyperparameter is missing, unknown, or has an invalid value; the message says which and why."""


@dataclass(frozen=True, slots=True)
class Interval:
    """A numeric range; ``None`` bounds are infinite."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (self.high is not None and (value >= self.high if self.high_open else value > self.high))

    def __str__(self) -> str:
        low = "(-inf" if self.low is None else f"{'(' if self.low_open else '['}{_num(self.low)}"
        high = "+inf)" if self.high is None else f"{_num(self.high)}{')' if self.high_open else ']'}"
        return f"{low}, {high}"


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


@dataclass(frozen=True, slots=True)
class Spec:
    """One hyperparameter: its kind (int, float, choice, list, tuple, nested, metrics) and allowed values."""

    kind: str
    interval: Interval | None = None
    choices: tuple[str, ...] = ()
    required: bool = False


def _i(low: float | None = None, high: float | None = None, *, lo_open: bool = False, hi_open: bool = False) -> Spec:
    return Spec("int", Interval(low, high, lo_open, hi_open))


def _f(low: float | None = None, high: float | None = None, *, lo_open: bool = False, hi_open: bool = False) -> Spec:
    return Spec("float", Interval(low, high, lo_open, hi_open))


def _c(*choices: str) -> Spec:
    return Spec("choice", choices=choices)


_TRUE_FALSE = _c("true", "false")
SPECS: dict[str, Spec] = {
    "num_round": Spec("int", Interval(1), required=True),
    "csv_weights": _i(0, 1),
    "early_stopping_rounds": _i(1),
    "booster": _c("gbtree", "gblinear", "dart"),
    "verbosity": _i(0, 3),
    "silent": _i(0, 1),
    "nthread": _i(1),
    "eta": _f(0, 1),
    "gamma": _f(0),
    "max_depth": _i(0),
    "min_child_weight": _f(0),
    "max_delta_step": _f(0),
    "subsample": _f(0, 1, lo_open=True),
    "colsample_bytree": _f(0, 1, lo_open=True),
    "colsample_bylevel": _f(0, 1, lo_open=True),
    "colsample_bynode": _f(0, 1, lo_open=True),
    "lambda": _f(0),
    "alpha": _f(0),
    "tree_method": _c(*TREE_METHODS),
    "sketch_eps": _f(0, 1, lo_open=True, hi_open=True),
    "scale_pos_weight": _f(0, lo_open=True),
    "updater": Spec("list", choices=UPDATERS),
    "dsplit": _c("row", "col"),
    "refresh_leaf": _i(0, 1),
    "process_type": _c("default", "update"),
    "grow_policy": _c("depthwise", "lossguide"),
    "max_leaves": _i(0),
    "max_bin": _i(0),
    "predictor": _c("auto", "cpu_predictor", "gpu_predictor"),
    "monotone_constraints": Spec("tuple", choices=("-1", "0", "1")),
    "interaction_constraints": Spec("nested", Interval(0)),
    "sample_type": _c("uniform", "weighted"),
    "normalize_type": _c("tree", "forest"),
    "rate_drop": _f(0, 1),
    "one_drop": _i(0, 1),
    "skip_drop": _f(0, 1),
    "lambda_bias": _f(0, 1),
    "tweedie_variance_power": _f(1, 2, lo_open=True, hi_open=True),
    "objective": _c(*OBJECTIVES),
    "num_class": _i(2),
    "base_score": _f(0),
    "_kfold": _i(2),
    "_num_cv_round": _i(1),
    "_tuning_objective_metric": _c(*metrics.tuning_metric_names()),
    "eval_metric": Spec("metrics"),
    "seed": _i(-(2**31), 2**31 - 1, lo_open=True, hi_open=True),
    "num_parallel_tree": _i(1),
    "save_model_on_termination": _TRUE_FALSE,
    "aft_loss_distribution": _c("normal", "logistic", "extreme"),
    "aft_loss_distribution_scale": _f(0),
    "single_precision_histogram": _TRUE_FALSE,
    "deterministic_histogram": _TRUE_FALSE,
    "sampling_method": _c("uniform", "gradient_based"),
    "prob_buffer_row": _f(1, lo_open=True),
    "max_cat_to_onehot": _i(1),
    "use_dask_gpu_training": _TRUE_FALSE,
}
_REQUIRED_HINTS = {"num_round": " (the number of boosting rounds, an integer >= 1)."}


def validate(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Typed, validated hyperparameters (aliases resolved; unset ones absent: XGBoost's defaults apply).

    Raises:
        HyperparameterError: naming the hyperparameter and what is wrong with it.
    """
    given = _strip_sdk_keys(raw)
    for name in (n for n, s in SPECS.items() if s.required and n not in given):
        raise HyperparameterError(f"Missing required hyperparameter: {name}" + _REQUIRED_HINTS.get(name, ""))
    values = {}
    for name, value in given.items():
        spec = SPECS.get(name)
        if spec is None:
            raise HyperparameterError(_extraneous(name))
        values[name] = _PARSERS[spec.kind](name, str(value).strip(), spec)
    for check in _DEPENDENCY_CHECKS:
        check(values)
    return values


def _strip_sdk_keys(raw: Mapping[str, Any]) -> dict[str, Any]:
    if SCRIPT_MODE_KEY in raw:
        raise HyperparameterError(
            f"The job names a training script ({SCRIPT_MODE_KEY}={raw[SCRIPT_MODE_KEY]}): XGBoost script "
            "(framework) mode is not supported by OpenSage yet; remove the entry point to use the built-in "
            "algorithm."
        )
    given = {}
    for name, value in raw.items():
        if name.startswith(SDK_PREFIX):
            log.info("Ignoring SDK setting %s", name)
            continue
        given[ALIASES.get(name, name)] = value
    return given


def _extraneous(name: str) -> str:
    close = difflib.get_close_matches(name, [*SPECS, *ALIASES], n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return (
        f"Extraneous hyperparameter found: {name}. It is not a hyperparameter of the XGBoost algorithm.{hint} "
        "See https://docs.aws.amazon.com/sagemaker/latest/dg/xgboost_hyperparameters.html"
    )


def _parse_int(name: str, text: str, spec: Spec) -> int:
    try:
        value = int(text)
    except ValueError:
        raise HyperparameterError(f"Hyperparameter {name}: value '{text}' is not an integer.") from None
    return _in_range(name, value, spec)


def _parse_float(name: str, text: str, spec: Spec) -> float:
    try:
        value = float(text)
    except ValueError:
        raise HyperparameterError(f"Hyperparameter {name}: value '{text}' is not a number.") from None
    return _in_range(name, value, spec)


def _in_range(name: str, value: Any, spec: Spec) -> Any:
    if spec.interval is not None and value not in spec.interval:
        raise HyperparameterError(f"Hyperparameter {name}: value {value} is not in {spec.interval}.")
    return value


def _parse_choice(name: str, text: str, spec: Spec) -> str:
    if text not in spec.choices:
        raise HyperparameterError(f"Hyperparameter {name}: value '{text}' is not one of: {', '.join(spec.choices)}.")
    return text


def _parse_list(name: str, text: str, spec: Spec) -> list[str]:
    items = [item.strip() for item in text.split(",")]
    bad = [item for item in items if item not in spec.choices]
    if bad:
        raise HyperparameterError(f"Hyperparameter {name}: value '{bad[0]}' is not one of: {', '.join(spec.choices)}.")
    return items


def _literal(name: str, text: str, shape: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise HyperparameterError(f"Hyperparameter {name}: value '{text}' is not {shape}.") from None


def _parse_tuple(name: str, text: str, spec: Spec) -> tuple[Any, ...]:
    value = _literal(name, text, "a tuple such as (1,0,-1)")
    items = tuple(value) if isinstance(value, tuple | list) else (value,)
    if any(str(item) not in spec.choices for item in items):
        raise HyperparameterError(f"Hyperparameter {name}: value {text} may hold only -1, 0 and 1.")
    return items


def _parse_nested(name: str, text: str, spec: Spec) -> list[list[int]]:
    value = _literal(name, text, "a list of feature-index lists such as [[0,1],[2,3]]")
    if not isinstance(value, list) or not all(isinstance(group, list | tuple) for group in value):
        raise HyperparameterError(f"Hyperparameter {name}: value {text} is not a list of lists of feature indices.")
    indices = [i for group in value for i in group]
    if any(not isinstance(i, int) or (spec.interval is not None and i not in spec.interval) for i in indices):
        raise HyperparameterError(f"Hyperparameter {name}: value {text} holds an index that is not an integer >= 0.")
    return [list(group) for group in value]


def _parse_metrics(name: str, text: str, spec: Spec) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    for metric in items:
        _check_metric(name, metric)
    return items


def _check_metric(name: str, metric: str) -> None:
    if "<function" in metric:
        raise HyperparameterError(f"User defined evaluation metric {metric} is not supported yet.")
    if "@" in metric:
        base, _, threshold = metric.partition("@")
        if base.strip() not in metrics.THRESHOLD_METRICS:
            raise HyperparameterError(
                f"Metric '{metric}' is not supported. Parameter '{name}' with customized threshold should be one "
                "of these options: 'error', 'ndcg', 'map'."
            )
        try:
            float(threshold.rstrip("-"))
        except ValueError:
            raise HyperparameterError(f"Threshold value 't' in '{base}@t' expects float input.") from None
        return
    if metric not in metrics.ALL_METRICS:
        raise HyperparameterError(
            f"Hyperparameter {name}: value '{metric}' is not one of: {', '.join(sorted(metrics.ALL_METRICS))}."
        )


_PARSERS: dict[str, Callable[[str, str, Spec], Any]] = {
    "int": _parse_int,
    "float": _parse_float,
    "choice": _parse_choice,
    "list": _parse_list,
    "tuple": _parse_tuple,
    "nested": _parse_nested,
    "metrics": _parse_metrics,
}


# --- dependencies between hyperparameters (the container's *_validator functions) ---------------


def _check_objective(values: dict[str, Any]) -> None:
    objective = values.get("objective", "reg:squarederror")
    if objective in ("multi:softmax", "multi:softprob") and "num_class" not in values:
        raise HyperparameterError(
            f"Require input for parameter 'num_class' for multi-classification (objective {objective}): set "
            "num_class to the number of classes."
        )
    if "num_class" in values and not objective.startswith("multi:"):
        # the container lets it through and XGBoost then fails on the shape of the labels
        raise HyperparameterError(
            f"Do not need to setup parameter 'num_class' for learning task other than multi-classification: "
            f"objective {objective} predicts one value per row; remove num_class or use multi:softprob."
        )


def _check_eval_metric(values: dict[str, Any]) -> None:
    chosen = values.get("eval_metric") or []
    objective = values.get("objective", "reg:squarederror")
    if "auc" in chosen and not objective.startswith(("binary:", "rank:")):
        raise HyperparameterError("Metric 'auc' can only be applied for classification and ranking problems.")
    if "aft-nloglik" in chosen and objective != "survival:aft":
        raise HyperparameterError("Metric 'aft-nloglik' can only be applied for 'survival:aft' objective.")


def _check_constraints(values: dict[str, Any]) -> None:
    tree_method = values.get("tree_method")
    if "monotone_constraints" in values and tree_method not in ("exact", "hist"):
        raise HyperparameterError(
            "monotone_constraints can be used only when the tree_method parameter is set to either 'exact' or 'hist'."
        )
    if "interaction_constraints" in values and tree_method not in ("exact", "hist", "approx"):
        raise HyperparameterError(
            "interaction_constraints can be used only when the tree_method parameter is set to either 'exact', "
            "'hist' or 'approx'."
        )


def _check_updater(values: dict[str, Any]) -> None:
    updater = values.get("updater")
    if not updater:
        return
    if values.get("booster") == "gblinear":
        if len(updater) != 1 or updater[0] not in ("shotgun", "coord_descent"):
            raise HyperparameterError("Linear updater should be one of these options: 'shotgun', 'coord_descent'.")
    elif values.get("process_type") == "update":
        if not all(u in ("refresh", "prune") for u in updater):
            raise HyperparameterError("process_type 'update' can only be used with updater 'refresh' and 'prune'")
    else:
        if any(u in ("shotgun", "coord_descent") for u in updater):
            raise HyperparameterError(
                "Tree updater should be selected from these options: 'grow_colmaker', 'distcol', 'grow_histmaker', "
                "'grow_local_histmaker', 'grow_skmaker', 'grow_quantile_histmaker', 'sync', 'refresh', 'prune'."
            )
        growers = [u for u in updater if u.startswith("grow_") or u == "distcol"]
        if len(growers) > 1:
            raise HyperparameterError(f"Only one tree grow plugin can be selected; updater has {', '.join(growers)}.")


_DEPENDENCY_CHECKS = (_check_objective, _check_eval_metric, _check_constraints, _check_updater)


# --- what reaches xgboost.train --------------------------------------------------------------------


def booster_params(values: Mapping[str, Any], *, has_gpu: bool) -> dict[str, Any]:
    """The ``params`` of ``xgboost.train``: container switches and parameters XGBoost 2 removed left out."""
    params = {
        name: _xgboost_value(value)
        for name, value in values.items()
        if name not in CONTAINER_ONLY and name not in REMOVED_IN_XGBOOST_2
    }
    if values.get("silent") == 1 and "verbosity" not in values:
        params["verbosity"] = 0
    if params.get("objective") == "reg:linear":
        params["objective"] = "reg:squarederror"  # the same loss; XGBoost 2 removed the old name
    if params.get("tree_method") == "gpu_hist":
        params["tree_method"] = "hist"
        if has_gpu:
            params["device"] = "cuda"
        else:
            log.warning("tree_method gpu_hist on an instance without GPUs: training with 'hist' on the CPU")
    return params


def _xgboost_value(value: Any) -> Any:
    if isinstance(value, list) and value and isinstance(value[0], str):
        return ",".join(value)  # updater
    if isinstance(value, tuple):
        return "(" + ",".join(str(v) for v in value) + ")"
    if isinstance(value, list):
        return str(value)
    return value


def removed_settings(values: Mapping[str, Any]) -> list[str]:
    """Hyperparameters the job set that XGBoost 2 removed (they have no effect here)."""
    return sorted(name for name in values if name in REMOVED_IN_XGBOOST_2)
