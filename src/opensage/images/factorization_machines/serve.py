"""Factorization Machines' model server: ``score`` (and ``predicted_label``) per record, as the container answers.

Requests: ``application/x-recordio-protobuf`` (the SDK's ``FactorizationMachinesPredictor``; sparse
records stay sparse), ``text/csv`` or JSON (dense ``features`` or sparse ``{"data": {"features":
{"keys": [...], "shape": [n], "values": [...]}}}``). Answers: a binary classifier's ``score`` (the
probability of 1) and ``predicted_label``, a regressor's ``score``; in JSON ``{"predictions":
[{"score": 0.8, "predicted_label": 1.0}, ...]}``, JSON Lines, CSV or RecordIO-protobuf.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from opensage.images import recordio, tabular
from opensage.images.factorization_machines.train import predict_scores
from opensage.images.tabular import PredictError

__all__ = ["PredictError", "load_model", "predict"]


def load_model(model_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    return tabular.load_model_file(Path(model_dir), "factorization-machines", "a Factorization Machines")


def predict(
    model: tuple[dict[str, Any], dict[str, Any]], body: bytes, content_type: str, accept: str
) -> tuple[bytes, str]:
    meta, arrays = model
    d = int(meta["feature_dim"])
    if (content_type or "").split(";")[0].strip().lower() == recordio.CONTENT_TYPE:
        try:
            x, _ = recordio.to_sparse(recordio.parse_records(body), feature_dim=d, where="request")
        except recordio.RecordIOError as exc:
            raise PredictError(f"Unable to read the {recordio.CONTENT_TYPE} request: {exc}") from exc
        if x.shape[0] == 0:
            raise PredictError("The request has no rows to score.")
    else:
        x = tabular.request_matrix(body, content_type, d)
    binary = meta["predictor_type"] == "binary_classifier"
    rows = [
        {"score": float(s), "predicted_label": float(s > 0.5)} if binary else {"score": float(s)}
        for s in predict_scores(arrays, x, binary)
    ]
    return tabular.answer(rows, accept, ["score", "predicted_label"] if binary else ["score"])
