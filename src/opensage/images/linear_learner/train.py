"""Linear Learner's training: ``num_models`` linear models trained at once on PyTorch, the best one kept.

The models share every mini-batch and differ in learning rate and weight decay (a grid when those
are ``auto``; :func:`hyperparameters.model_grid`). Each is one slice of a ``[models, features,
outputs]`` weight tensor; its own learning rate is a per-model scale of its parameters, which
Adam and RMSProp see as that learning rate (SGD as its square root's square). The data are
standardized from the first ``num_point_for_scaler`` rows (and a regressor's labels), the learning
rate decays by ``lr_scheduler_factor`` every ``lr_scheduler_step`` batches, and training stops
early when the validation loss has not improved by ``early_stopping_tolerance`` (relative) for
``early_stopping_patience`` epochs; each model keeps its weights from its best validation epoch.

Then the model is chosen on the validation data (the training data without it), a binary
classifier's threshold with it: the one that maximizes accuracy or F-beta, the precision at
``target_recall``, the recall at ``target_precision``, or the lowest loss. The chosen model is
saved as ``model_algo-1`` with the scaling folded into its weights, and scored on the
validation and test channels.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from opensage.compute import cores
from opensage.images import tabular
from opensage.images.linear_learner import hyperparameters, scoring
from opensage.images.tabular import ClientError, Job

log = logging.getLogger(__name__)
TUNING_HP = "_tuning_objective_metric"
OBJECTIVE_NAMES = {
    "logistic": "binary_classification_cross_entropy",
    "hinge_loss": "binary_classification_hinge_loss",
    "softmax_loss": "multiclass_cross_entropy",
    "squared_loss": "square_loss",
    "absolute_loss": "absolute_loss",
    "eps_insensitive_squared_loss": "eps_insensitive_squared_loss",
    "eps_insensitive_absolute_loss": "eps_insensitive_absolute_loss",
    "quantile_loss": "quantile_loss",
    "huber_loss": "huber_loss",
}


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        raise ClientError(
            "The Linear Learner image trains on PyTorch, which is not installed on this OpenSage host; "
            "install it with: pip install 'opensage[pytorch]'."
        ) from None
    return torch


def check_labels(y: np.ndarray, hps: Mapping[str, Any], channel: str) -> None:
    predictor = hps["predictor_type"]
    if predictor == "binary_classifier":
        bad = (y != 0) & (y != 1)
        rule = "binary_classifier labels must be 0 or 1"
    elif predictor == "multiclass_classifier":
        n = int(hps["num_classes"])
        bad = (y < 0) | (y >= n) | (y != np.floor(y))
        rule = f"multiclass_classifier labels must be integers in [0, num_classes) = [0, {n})"
    else:
        bad = ~np.isfinite(y)
        rule = "regressor labels must be finite numbers"
    if bad.any():
        row = int(np.argmax(bad))
        raise ClientError(f"Channel '{channel}': record {row} has label {y[row]:g}; {rule}.")


class Models:
    """The parallel models: weights ``[M, d, K]`` and biases ``[M, K]`` as scaled parameters."""

    def __init__(self, torch: Any, hps: Mapping[str, Any], d: int, k: int, grid: list[tuple[float, float, float]]):
        self.torch = torch
        m = len(grid)
        lrs = torch.tensor([g[0] for g in grid], dtype=torch.float32)
        self.wd = torch.tensor([g[1] for g in grid], dtype=torch.float32)
        self.l1 = torch.tensor([g[2] for g in grid], dtype=torch.float32)
        sgd = hps["optimizer"] == "sgd"
        self.w_scale = (lrs.sqrt() if sgd else lrs).view(m, 1, 1)
        self.b_scale = ((lrs * hps["bias_lr_mult"]).sqrt() if sgd else lrs * hps["bias_lr_mult"]).view(m, 1)
        gen = torch.Generator().manual_seed(0)
        if hps["init_method"] == "normal":
            w0 = torch.randn(m, d, k, generator=gen) * hps["init_sigma"]
        else:
            w0 = (torch.rand(m, d, k, generator=gen) * 2 - 1) * hps["init_scale"]
        self.v = torch.nn.Parameter(w0 / self.w_scale)
        self.vb = torch.nn.Parameter(torch.full((m, k), float(hps["init_bias"])) / self.b_scale)
        self.use_bias = bool(hps["use_bias"])
        self.bias_wd_mult = float(hps["bias_wd_mult"])
        self.best = (self.weight().detach().clone(), self.bias().detach().clone())

    def parameters(self) -> list[Any]:
        return [self.v, self.vb] if self.use_bias else [self.v]

    def weight(self) -> Any:
        return self.v * self.w_scale

    def bias(self) -> Any:
        return self.vb * self.b_scale if self.use_bias else self.torch.zeros_like(self.vb)

    def margins(self, x: Any, weight: Any = None, bias: Any = None) -> Any:
        """``[M, B, K]`` raw outputs for a batch ``x`` of ``[B, d]``."""
        w = self.weight() if weight is None else weight
        b = self.bias() if bias is None else bias
        return self.torch.einsum("bd,mdk->mbk", x, w) + b[:, None, :]

    def penalty(self) -> Any:
        w = self.weight()
        per_model = 0.5 * self.wd * (w**2).sum(dim=(1, 2)) + self.l1 * w.abs().sum(dim=(1, 2))
        if self.use_bias and self.bias_wd_mult:
            per_model = per_model + 0.5 * self.wd * self.bias_wd_mult * (self.bias() ** 2).sum(dim=1)
        return per_model

    def keep(self, improved: Any) -> None:
        """Snapshot the weights of the models whose validation loss improved."""
        with self.torch.no_grad():
            w, b = self.weight(), self.bias()
            self.best[0][improved] = w[improved]
            self.best[1][improved] = b[improved]


def _optimizer(torch: Any, params: list[Any], hps: Mapping[str, Any]) -> Any:
    if hps["optimizer"] == "sgd":
        return torch.optim.SGD(params, lr=1.0, momentum=hps["momentum"])
    if hps["optimizer"] == "rmsprop":
        return torch.optim.RMSprop(params, lr=1.0, momentum=hps["momentum"])
    return torch.optim.Adam(params, lr=1.0, betas=(hps["beta_1"], hps["beta_2"]))


def _scaler(x: np.ndarray, hps: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    d = x.shape[1]
    if not hps["normalize_data"]:
        return np.zeros(d, np.float32), np.ones(d, np.float32)
    sample = x[: int(hps["num_point_for_scaler"])]
    mean = sample.mean(axis=0) if hps["unbias_data"] else np.zeros(d, np.float32)
    std = sample.std(axis=0)
    return mean.astype(np.float32), np.where(std > 0, std, 1.0).astype(np.float32)


def _label_scaler(y: np.ndarray, hps: Mapping[str, Any]) -> tuple[float, float]:
    if hps["predictor_type"] != "regressor" or not hps["normalize_label"]:
        return 0.0, 1.0
    sample = y[: int(hps["num_point_for_scaler"])]
    std = float(sample.std())
    return (float(sample.mean()) if hps["unbias_label"] else 0.0), (std if std > 0 else 1.0)


def _weights(y: np.ndarray, hps: Mapping[str, Any]) -> tuple[float, np.ndarray | None]:
    """The positive examples' weight of a binary classifier, the class weights of a multiclass one."""
    if hps["predictor_type"] == "binary_classifier":
        mult = str(hps["positive_example_weight_mult"])
        if mult in ("auto", "balanced"):
            positives = float((y == 1).sum())
            return (float((y == 0).sum()) / positives if positives else 1.0), None
        return float(mult), None
    if hps["predictor_type"] == "multiclass_classifier" and hps["balance_multiclass_weights"]:
        counts = np.bincount(y.astype(np.int64), minlength=int(hps["num_classes"])).astype(np.float64)
        return 1.0, (len(y) / (len(counts) * np.maximum(counts, 1))).astype(np.float32)
    return 1.0, None


def train(job: Job) -> None:
    """Validate, load, train the parallel models, choose one, save it and score it."""
    started = time.monotonic()
    hps = hyperparameters.validate(job.hyperparameters, tuning=TUNING_HP in job.hyperparameters)
    tabular.check_channels(job.channels, ("train", "validation", "test"), ("train",), "Linear Learner")
    d = int(hps["feature_dim"])
    x, y = tabular.load_channel(job, "train", supervised=True, feature_dim=d)
    assert y is not None
    check_labels(y, hps, "train")
    sets: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in ("validation", "test"):
        if name in job.channels:
            xs, ys = tabular.load_channel(job, name, supervised=True, feature_dim=d)
            assert ys is not None
            check_labels(ys, hps, name)
            sets[name] = (xs, ys)
    torch = _torch()
    torch.set_num_threads(max(1, cores.usable_cores()))
    torch.manual_seed(0)
    mean, std = _scaler(x, hps)
    y_mean, y_std = _label_scaler(y, hps)
    k = int(hps["num_classes"]) if hps["predictor_type"] == "multiclass_classifier" else 1
    grid = hyperparameters.model_grid(hps)
    models = Models(torch, hps, d, k, grid)
    loss_fn = scoring.loss_function(torch, hps, *_weights(y, hps))

    def tensors(xa: np.ndarray, ya: np.ndarray) -> tuple[Any, Any]:
        return torch.from_numpy((xa - mean) / std), torch.from_numpy((ya - y_mean) / y_std)

    xt, yt = tensors(x, y)
    val = tensors(*sets["validation"]) if "validation" in sets else None
    log.info(
        "Training %d models (%s, loss %s, optimizer %s) on %d records of %d features",
        len(grid),
        hps["predictor_type"],
        hps["loss"],
        hps["optimizer"],
        len(y),
        d,
    )
    _fit(torch, job, hps, models, loss_fn, xt, yt, val)
    weight, bias = models.best
    eval_x, eval_y = val if val is not None else (xt, yt)
    calibration = int(hps["num_calibration_samples"])
    eval_x, eval_y = eval_x[:calibration], eval_y[:calibration]
    with torch.no_grad():
        margins = models.margins(eval_x, weight, bias)
        per_model = loss_fn(margins, eval_y).mean(dim=1).numpy()
    chosen, threshold = scoring.choose(hps, margins.numpy(), eval_y.numpy(), per_model)
    log.info("Chose model %d of %d (learning rate %g, wd %g, l1 %g)", chosen, len(grid), *grid[chosen])
    w = weight[chosen].numpy() / std[:, None] * y_std
    b = (bias[chosen].numpy() - (mean / std) @ weight[chosen].numpy()) * y_std + y_mean
    meta = {
        "algorithm": "linear-learner",
        "predictor_type": hps["predictor_type"],
        "loss": hps["loss"],
        "feature_dim": d,
        "num_classes": k,
        "threshold": threshold,
    }
    tabular.save_model(job.layout.model_dir, meta, {"weight": w.astype(np.float32), "bias": b.astype(np.float32)})
    for name, (xs, ys) in sets.items():
        raw = xs @ w + b
        objective = float(
            loss_fn(torch.from_numpy((raw - y_mean) / y_std)[None], torch.from_numpy((ys - y_mean) / y_std)).mean()
        )
        for metric, value, is_loss in scoring.final_metrics(hps, raw, ys, threshold, objective):
            job.quality(name, metric, value, loss=is_loss)
    log.info("Training took %.1f s", time.monotonic() - started)


def _fit(
    torch: Any,
    job: Job,
    hps: Mapping[str, Any],
    models: Models,
    loss_fn: Any,
    xt: Any,
    yt: Any,
    val: tuple[Any, Any] | None,
) -> None:
    optimizer = _optimizer(torch, models.parameters(), hps)
    lrs = [g[0] for g in hyperparameters.model_grid(hps)]
    floor = min(1.0, float(hps["lr_scheduler_minimum_lr"]) / min(lrs))
    batch, n, step = int(hps["mini_batch_size"]), len(yt), 0
    objective = OBJECTIVE_NAMES[hps["loss"]] + "_objective"
    best_val = torch.full((len(lrs),), float("inf"))
    best_overall, stale = float("inf"), 0
    for epoch in range(int(hps["epochs"])):
        order = torch.randperm(n)
        total = torch.zeros(len(lrs))
        for start in range(0, n, batch):
            index = order[start : start + batch]
            losses = loss_fn(models.margins(xt[index]), yt[index]).mean(dim=1)
            optimizer.zero_grad(set_to_none=True)
            (losses + models.penalty()).sum().backward()
            optimizer.step()
            total += losses.detach() * len(index)
            step += 1
            if hps["use_lr_scheduler"] and step % int(hps["lr_scheduler_step"]) == 0:
                for group in optimizer.param_groups:
                    group["lr"] = max(group["lr"] * float(hps["lr_scheduler_factor"]), floor)
        train_loss = total / n
        job.quality("train", objective, float(train_loss.min()), loss=True, epoch=epoch)
        if val is None:
            models.keep(torch.ones(len(lrs), dtype=torch.bool))
            continue
        with torch.no_grad():
            val_loss = loss_fn(models.margins(val[0]), val[1]).mean(dim=1)
        improved = val_loss < best_val
        best_val = torch.where(improved, val_loss, best_val)
        models.keep(improved)
        epoch_best = float(val_loss.min())
        job.quality("validation", objective, epoch_best, loss=True, epoch=epoch)
        if epoch_best < best_overall * (1 - float(hps["early_stopping_tolerance"])):
            best_overall, stale = epoch_best, 0
        else:
            stale += 1
            if stale >= int(hps["early_stopping_patience"]):
                log.info("Early stop at epoch %d: the validation loss did not improve for %d epochs", epoch, stale)
                break
