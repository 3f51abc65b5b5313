"""Factorization Machines training: the container's hyperparameters, a degree-2 FM on PyTorch.

The model scores a record ``x`` as ``w0 + <w, x> + sum_{i<j} <v_i, v_j> x_i x_j``, computed in
O(nnz x num_factors) as ``0.5 * sum_f ((x V)_f^2 - (x^2)(V^2)_f)``. Records stay sparse (a SciPy
CSR matrix, fed to ``torch.sparse.mm`` a mini-batch at a time), so ``feature_dim`` may be in the
millions as in the container's recommender examples. Training is ``epochs`` passes of Adam over
shuffled ``mini_batch_size`` batches with a learning rate and weight decay per term (``bias_lr``,
``linear_lr``, ``factors_lr``, ``*_wd``), each term initialised by its ``*_init_method``
(``normal`` with ``*_init_sigma``, ``uniform`` in +-``*_init_scale``, ``constant`` ``*_init_value``);
``clip_gradient`` clips each gradient element, ``rescale_grad`` scales the gradients, ``eps`` is Adam's.

Loss and metrics: ``binary_classifier`` (labels 0/1) trains on the logistic loss and reports
``binary_classification_accuracy``, ``binary_classification_cross_entropy`` and
``binary_f_beta`` (beta 1) on ``test``; ``regressor`` trains on the squared loss and reports ``rmse``.
The training metric is logged per epoch (``train``), as the container does.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from opensage.compute import cores
from opensage.images import tabular
from opensage.images.tabular import ClientError, Job, Param

log = logging.getLogger(__name__)
TERMS = {"bias": (0.1, 0.01, 0.01), "linear": (0.001, 0.001, 0.01), "factors": (0.0001, 0.00001, 0.001)}


def _schema() -> dict[str, Param]:
    schema: dict[str, Param] = {
        "feature_dim": Param("integer", required=True, minimum=1),
        "num_factors": Param("integer", required=True, minimum=1),
        "predictor_type": Param("string", required=True, choices=("binary_classifier", "regressor")),
        "epochs": Param("integer", 1, minimum=1),
        "mini_batch_size": Param("integer", 1000, minimum=1),
        "clip_gradient": Param("number", None),
        "eps": Param("number", None, exclusive_minimum=0.0),
        "rescale_grad": Param("number", None),
    }
    for term, (lr, wd, sigma) in TERMS.items():
        schema[f"{term}_lr"] = Param("number", lr, minimum=0.0)
        schema[f"{term}_wd"] = Param("number", wd, minimum=0.0)
        schema[f"{term}_init_method"] = Param("string", "normal", choices=("normal", "uniform", "constant"))
        schema[f"{term}_init_sigma"] = Param("number", sigma, minimum=0.0)
        schema[f"{term}_init_scale"] = Param("number", None, minimum=0.0)
        schema[f"{term}_init_value"] = Param("number", None)
    return schema


SCHEMA = _schema()


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        raise ClientError(
            "The Factorization Machines image trains on PyTorch, which is not installed on this OpenSage host; "
            "install it with: pip install 'opensage[pytorch]'."
        ) from None
    return torch


def _init(torch: Any, shape: tuple[int, ...], hps: dict[str, Any], term: str, gen: Any) -> Any:
    method = hps[f"{term}_init_method"]
    if method == "constant":
        value = hps[f"{term}_init_value"]
        if value is None:
            raise ClientError(f"{term}_init_value is required when {term}_init_method is constant.")
        return torch.full(shape, float(value))
    if method == "uniform":
        scale = hps[f"{term}_init_scale"]
        if scale is None:
            raise ClientError(f"{term}_init_scale is required when {term}_init_method is uniform.")
        return (torch.rand(shape, generator=gen) * 2 - 1) * float(scale)
    return torch.randn(shape, generator=gen) * float(hps[f"{term}_init_sigma"])


def batch_tensors(torch: Any, rows: Any) -> tuple[Any, Any]:
    """A SciPy CSR block and its element-wise square as PyTorch sparse COO tensors."""
    coo = rows.tocoo()
    index = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
    data = coo.data.astype(np.float32)
    return tuple(  # type: ignore[return-value]
        torch.sparse_coo_tensor(index, torch.from_numpy(d), coo.shape, check_invariants=False)
        for d in (data, data * data)
    )


def scores(torch: Any, x: Any, x2: Any, w0: Any, w: Any, v: Any) -> Any:
    """The FM's raw output for each row of the sparse batch ``x`` (``x2``: its element-wise square)."""
    xv = torch.sparse.mm(x, v)
    pairwise = 0.5 * (xv**2 - torch.sparse.mm(x2, v * v)).sum(dim=1)
    return w0 + torch.sparse.mm(x, w).squeeze(1) + pairwise


def train(job: Job) -> None:
    started = time.monotonic()
    hps = tabular.validate(job.hyperparameters, SCHEMA, "Factorization Machines")
    tabular.check_channels(job.channels, ("train", "test"), ("train",), "Factorization Machines")
    d, f = int(hps["feature_dim"]), int(hps["num_factors"])
    binary = hps["predictor_type"] == "binary_classifier"
    x, y = tabular.load_channel(job, "train", supervised=True, feature_dim=d, sparse=True)
    assert y is not None
    if binary and not np.isin(y, (0.0, 1.0)).all():
        raise ClientError("Labels of a binary_classifier must be 0 or 1; the train channel has others.")
    torch = _torch()
    torch.set_num_threads(max(1, cores.usable_cores()))
    gen = torch.Generator().manual_seed(0)
    w0 = _init(torch, (1,), hps, "bias", gen).requires_grad_()
    w = _init(torch, (d, 1), hps, "linear", gen).requires_grad_()
    v = _init(torch, (d, f), hps, "factors", gen).requires_grad_()
    groups = [
        {"params": [p], "lr": hps[f"{t}_lr"], "weight_decay": hps[f"{t}_wd"]}
        for p, t in ((w0, "bias"), (w, "linear"), (v, "factors"))
    ]
    optimizer = torch.optim.Adam(groups, eps=hps["eps"] or 1e-8)
    loss_fn = torch.nn.BCEWithLogitsLoss() if binary else torch.nn.MSELoss()
    batch, rng = int(hps["mini_batch_size"]), np.random.default_rng(0)
    labels = torch.from_numpy(y)
    for epoch in range(int(hps["epochs"])):
        order, total = rng.permutation(x.shape[0]), 0.0
        for start in range(0, len(order), batch):
            rows = order[start : start + batch]
            optimizer.zero_grad()
            loss = loss_fn(scores(torch, *batch_tensors(torch, x[rows]), w0, w, v), labels[rows])
            loss.backward()
            for p in (w0, w, v):
                if hps["rescale_grad"] is not None:
                    p.grad.mul_(float(hps["rescale_grad"]))
                if hps["clip_gradient"] is not None:
                    p.grad.clamp_(-float(hps["clip_gradient"]), float(hps["clip_gradient"]))
            optimizer.step()
            total += float(loss.detach()) * len(rows)
        mean = total / x.shape[0]
        if binary:
            job.quality("train", "binary_classification_cross_entropy", mean, loss=True, epoch=epoch)
        else:
            job.quality("train", "rmse", float(np.sqrt(mean)), loss=True, epoch=epoch)
    model = {"w0": w0.detach().numpy(), "w": w.detach().numpy(), "v": v.detach().numpy()}
    log.info("Trained a %d-factor machine over %d features on %d records in %.2f s", f, d, x.shape[0],
             time.monotonic() - started)
    meta = {"algorithm": "factorization-machines", "feature_dim": d, "num_factors": f,
            "predictor_type": hps["predictor_type"]}
    tabular.save_model(job.layout.model_dir, meta, model)
    if "test" in job.channels:
        xt, yt = tabular.load_channel(job, "test", supervised=True, feature_dim=d, sparse=True)
        assert yt is not None
        _report_test(job, predict_scores(model, xt, binary), yt, binary)


def predict_scores(model: dict[str, np.ndarray], x: Any, binary: bool) -> np.ndarray:
    """Each row's score (a probability for a binary classifier), the rows a SciPy sparse or dense matrix."""
    from scipy import sparse

    x = sparse.csr_matrix(x, dtype=np.float32)
    xv = np.asarray(x @ model["v"])
    pairwise = 0.5 * (xv**2 - np.asarray(x.multiply(x) @ (model["v"] ** 2))).sum(axis=1)
    raw = float(model["w0"][0]) + np.asarray(x @ model["w"]).ravel() + pairwise
    if not binary:
        return raw
    from scipy.special import expit

    return np.asarray(expit(raw))


def _report_test(job: Job, score: np.ndarray, y: np.ndarray, binary: bool) -> None:
    if not binary:
        job.quality("test", "rmse", float(np.sqrt(np.mean((score - y) ** 2))), loss=True)
        return
    predicted = (score > 0.5).astype(np.float32)
    p = np.clip(score.astype(np.float64), 1e-12, 1 - 1e-12)
    tp = float(((predicted == 1) & (y == 1)).sum())
    precision = tp / max(float(predicted.sum()), 1.0)
    recall = tp / max(float(y.sum()), 1.0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    job.quality("test", "binary_classification_accuracy", float(np.mean(predicted == y)), loss=False)
    job.quality("test", "binary_classification_cross_entropy",
                float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))), loss=True)
    job.quality("test", "binary_f_beta", f1, loss=False)
