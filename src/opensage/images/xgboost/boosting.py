"""The boosting itself: XGBoost's parameters, metrics, callbacks and ``xgboost.train``, as the container sets them.

The container (``algorithm_mode/train.py``, ``callback.py``, ``train_utils.py``) prints every round
with XGBoost's ``EvaluationMonitor``, checkpoints when the job has a checkpoint configuration, keeps
the model after each round with ``save_model_on_termination``, and stops early only with a
validation channel and an evaluation metric (the tuning objective's, else the last ``eval_metric``),
keeping the best rounds.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xgboost as xgb

from opensage.images.xgboost import callbacks, hyperparameters, metrics
from opensage.images.xgboost.callbacks import save_model
from opensage.images.xgboost.errors import ClientError

__all__ = [
    "EvalPlan",
    "Setup",
    "boost",
    "default_tree_method",
    "empty_matrix",
    "eval_plan",
    "model_format",
    "save_model",
]

log = logging.getLogger(__name__)
TRAIN, VALIDATION = "train", "validation"
# XGBoost errors the container reports as the customer's (constants/xgb_constants.py CUSTOMER_ERRORS).
CUSTOMER_ERRORS = (
    "label must be in [0,1] for logistic regression",
    "label must be in [0, num_class)",
    "Target is multiclass but average='binary'",
    "feature_names mismatch",
    "Check failed: preds.size() == info.labels_.size()",
    "AUC: the dataset only contains pos or neg samples",
    "base_score must be in (0,1) for logistic loss",
    "label must be nonnegative",
    "Parameter reg_lambda should be greater equal to 0",
)
EXACT_ROW_LIMIT = 1 << 22  # XGBoost 1.x "auto": exact below this many rows on one host, approx above


@dataclass(frozen=True, slots=True)
class Setup:
    """What boosting needs to know about the host and the job beyond the hyperparameters."""

    nthread: int
    is_master: bool
    hosts: int
    has_gpu: bool
    image_tag: str
    checkpoint_dir: Path | None
    model_path: Path


@dataclass(frozen=True, slots=True)
class EvalPlan:
    """Which metrics XGBoost computes, which this image computes, and what early stopping watches."""

    xgboost_metrics: list[str]
    own_metrics: list[str]
    stopping_metric: str | None


def eval_plan(hps: Mapping[str, Any]) -> EvalPlan:
    """The container's metric handling (``train_utils.get_eval_metrics_and_feval``)."""
    eval_metric = list(hps.get("eval_metric") or [])
    tuning = hps.get("_tuning_objective_metric")
    tuning_metrics = tuning.split(":", 1)[1].split(",") if tuning else []
    if tuning_metrics and eval_metric:
        union = sorted(set(tuning_metrics) | set(eval_metric))  # sorted, as the container does, so hosts agree
    else:
        union = tuning_metrics or eval_metric
    xgb_metrics, own = metrics.split_metrics(union)
    stopping = tuning_metrics[-1] if tuning_metrics else (eval_metric[-1] if eval_metric else None)
    return EvalPlan(xgb_metrics, own, stopping)


def default_tree_method(image_tag: str, rows: int, hosts: int) -> str | None:
    """XGBoost 1.x's pick for ``tree_method=auto`` when the job names a 1.x image; else ``None`` (XGBoost's: hist)."""
    match = re.match(r"^(\d+)\.", image_tag or "")
    if match is None or int(match.group(1)) >= 2:
        return None
    return "approx" if hosts > 1 or rows >= EXACT_ROW_LIMIT else "exact"


def model_format(image_tag: str) -> str:
    """``ubj`` (what the 3.0-5 container writes), or ``json`` for a job naming a container before 1.6-1.

    XGBoost reads UBJSON from 1.6 on; JSON from 1.0 on. So the model loads in the container the job
    named, as well as here.
    """
    match = re.match(r"^(\d+)\.(\d+)", image_tag or "")
    return "json" if match and (int(match.group(1)), int(match.group(2))) < (1, 6) else "ubj"


def params_for(hps: Mapping[str, Any], plan: EvalPlan, setup: Setup, rows: int) -> dict[str, Any]:
    """The ``params`` of ``xgboost.train``."""
    params = hyperparameters.booster_params(hps, has_gpu=setup.has_gpu)
    params["nthread"] = setup.nthread
    if plan.xgboost_metrics:
        params["eval_metric"] = plan.xgboost_metrics
    if params.get("tree_method", "auto") == "auto" and params.get("booster") != "gblinear":
        chosen = default_tree_method(setup.image_tag, rows, setup.hosts)
        if chosen:
            log.info("tree_method auto: using '%s' as XGBoost 1.x does (image %s)", chosen, setup.image_tag)
            params["tree_method"] = chosen
    return params


def empty_matrix() -> xgb.DMatrix:
    """The matrix of a host without data in a multi-host job: it joins the collective with no rows."""
    return xgb.DMatrix(np.empty((0, 0), dtype=np.float32), label=np.empty(0, dtype=np.float32))


def boost(hps: Mapping[str, Any], dtrain: xgb.DMatrix, dval: xgb.DMatrix | None, setup: Setup) -> xgb.Booster:
    """Train (resuming from the latest checkpoint, if any) and return the model to save.

    Raises:
        ClientError: XGBoost rejected the data or parameters in a way the job's author can fix.
        RuntimeError: XGBoost failed otherwise.
    """
    plan = eval_plan(hps)
    params = params_for(hps, plan, setup, dtrain.num_row())
    evals = [(dtrain, TRAIN)] + ([(dval, VALIDATION)] if dval is not None else [])
    resume_from, done = callbacks.load_checkpoint(setup.checkpoint_dir)
    watchers = _callbacks(hps, plan, setup, has_validation=dval is not None, start=done)
    custom = metrics.custom_metric(plan.own_metrics, params.get("objective", "")) if plan.own_metrics else None
    log.debug("XGBoost parameters: %s", params)
    try:
        return xgb.train(
            params,
            dtrain,
            num_boost_round=max(int(hps["num_round"]) - done, 0),
            evals=evals,
            callbacks=watchers,
            custom_metric=custom,
            xgb_model=resume_from,
            verbose_eval=False,
        )
    except (xgb.core.XGBoostError, ValueError) as exc:
        raise classify(exc) from exc


_XGBOOST_PREFIX = re.compile(r"^\[\d{2}:\d{2}:\d{2}\] \S+:\d+: ")  # "[17:56:49] /path/regression_obj.cu:49: "


def classify(exc: Exception) -> Exception:
    """A ClientError for the customer's errors (as the container lists them), else a RuntimeError."""
    message = str(exc)
    first = next((line for line in message.splitlines() if line.strip()), type(exc).__name__)
    first = _XGBOOST_PREFIX.sub("", first.strip())
    if isinstance(exc, ValueError) or any(known in message for known in CUSTOMER_ERRORS):
        return ClientError(first)
    return RuntimeError(f"XGB train call failed with exception: {first}")


def _callbacks(
    hps: Mapping[str, Any], plan: EvalPlan, setup: Setup, *, has_validation: bool, start: int
) -> list[xgb.callback.TrainingCallback]:
    watchers: list[xgb.callback.TrainingCallback] = [xgb.callback.EvaluationMonitor()]
    if setup.checkpoint_dir is not None and setup.is_master:
        watchers.append(callbacks.SaveCheckpoint(setup.checkpoint_dir, start))
    if hps.get("save_model_on_termination") == "true" and setup.is_master:
        watchers.append(callbacks.SaveIntermediateModel(setup.model_path))
    early = hps.get("early_stopping_rounds")
    if early and not (has_validation and plan.stopping_metric):
        log.warning(
            "early_stopping_rounds=%s has no effect: as in SageMaker's container, early stopping needs a "
            "'validation' channel and an eval_metric (it watches the last one)",
            early,
        )
    elif early:
        watchers.append(
            xgb.callback.EarlyStopping(
                rounds=int(early),
                data_name=VALIDATION,
                metric_name=plan.stopping_metric,
                maximize=metrics.is_maximized(plan.stopping_metric or ""),
                save_best=setup.is_master,
            )
        )
    return watchers
