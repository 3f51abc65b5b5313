"""k-NN's model server: the index loaded, each record's ``predicted_label`` answered as the container does.

Requests: ``application/x-recordio-protobuf`` (the SDK's ``KNNPredictor``), ``text/csv`` or JSON.
Answers, one per row: ``predicted_label`` in RecordIO-protobuf (the record's ``label``), JSON
``{"predictions": [{"predicted_label": 0.0}, ...]}``, JSON Lines or CSV. With ``verbose=true`` in
the Accept header (``application/json; verbose=true``) each answer also has the neighbours'
``distances`` (best first) and their ``labels``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from opensage.images import tabular
from opensage.images.knn.train import Index
from opensage.images.tabular import PredictError

__all__ = ["PredictError", "load_model", "predict"]


def load_model(model_dir: Path) -> Index:
    meta, arrays = tabular.load_model_file(Path(model_dir), "knn", "a k-NN")
    return Index(meta, arrays)


def predict(model: Index, body: bytes, content_type: str, accept: str) -> tuple[bytes, str]:
    x = tabular.request_matrix(body, content_type, int(model.meta["feature_dim"]))
    predicted, distances, labels = model.predict(x)
    verbose = "verbose=true" in (accept or "").replace(" ", "").lower()
    rows: list[dict[str, Any]] = []
    for i, label in enumerate(predicted):
        row: dict[str, Any] = {"predicted_label": float(label)}
        if verbose:
            row["distances"], row["labels"] = distances[i].astype("float32"), labels[i]
        rows.append(row)
    keys = ["predicted_label", "distances", "labels"] if verbose else ["predicted_label"]
    return tabular.answer(rows, accept, keys)
