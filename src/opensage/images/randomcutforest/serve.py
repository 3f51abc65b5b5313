"""Random Cut Forest's model server: each record's anomaly ``score``, as the container answers it.

Requests: ``application/x-recordio-protobuf`` (the SDK's ``RandomCutForestPredictor``), ``text/csv``
or JSON. Answers: JSON ``{"scores": [{"score": 0.02}, ...]}``, JSON Lines ``{"score": 0.02}`` per
line, RecordIO-protobuf (each record's ``score`` label) or CSV.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from opensage.images import tabular
from opensage.images.randomcutforest.forest import Forest, scores
from opensage.images.tabular import PredictError

__all__ = ["PredictError", "load_model", "predict"]


def load_model(model_dir: Path) -> tuple[dict[str, Any], Forest]:
    meta, arrays = tabular.load_model_file(Path(model_dir), "randomcutforest", "a Random Cut Forest")
    return meta, Forest.from_arrays(arrays)


def predict(model: tuple[dict[str, Any], Forest], body: bytes, content_type: str, accept: str) -> tuple[bytes, str]:
    meta, forest = model
    x = tabular.request_matrix(body, content_type, int(meta["feature_dim"]))
    rows = [{"score": float(s)} for s in scores(forest, x)]
    return tabular.answer(rows, accept, ["score"], json_key="scores")
