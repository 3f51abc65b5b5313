"""PCA's model server: ``model_algo-1`` loaded, each record's ``projection`` answered as the container does.

Requests: ``application/x-recordio-protobuf`` (the SDK's ``PCAPredictor``), ``text/csv`` or JSON
(``{"instances": [{"features": [...]}, ...]}``). Answers, one per row: in RecordIO-protobuf as each
record's ``projection`` label, in JSON ``{"projections": [{"projection": [...]}, ...]}``, in JSON
Lines ``{"projection": [...]}`` per line, in CSV the projection's values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from opensage.images import tabular
from opensage.images.pca.train import project
from opensage.images.tabular import PredictError

__all__ = ["PredictError", "load_model", "predict"]


def load_model(model_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    return tabular.load_model_file(Path(model_dir), "pca", "a PCA")


def predict(
    model: tuple[dict[str, Any], dict[str, Any]], body: bytes, content_type: str, accept: str
) -> tuple[bytes, str]:
    meta, arrays = model
    x = tabular.request_matrix(body, content_type, int(meta["feature_dim"]))
    rows = [{"projection": row.astype("float32")} for row in project(arrays, x)]
    return tabular.answer(rows, accept, ["projection"], json_key="projections")
