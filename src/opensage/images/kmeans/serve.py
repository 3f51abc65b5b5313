"""K-Means' model server: ``model_algo-1`` loaded, requests answered as the container does.

Requests: ``application/x-recordio-protobuf`` (the SDK's ``KMeansPredictor``), ``text/csv`` or JSON
(``{"instances": [{"features": [...]}, ...]}``). Answers, one per row: ``closest_cluster`` (the
index of the nearest center) and ``distance_to_cluster`` (the Euclidean distance to it); in
RecordIO-protobuf as each record's ``label`` entries, in JSON ``{"predictions": [{"closest_cluster":
1.0, "distance_to_cluster": 0.4}, ...]}``, in CSV ``closest_cluster,distance_to_cluster``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from opensage.images import tabular
from opensage.images.kmeans.train import closest
from opensage.images.tabular import PredictError

__all__ = ["PredictError", "load_model", "predict"]


def load_model(model_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    return tabular.load_model_file(Path(model_dir), "kmeans", "a K-Means")


def predict(
    model: tuple[dict[str, Any], dict[str, Any]], body: bytes, content_type: str, accept: str
) -> tuple[bytes, str]:
    meta, arrays = model
    x = tabular.request_matrix(body, content_type, int(meta["feature_dim"]))
    index, squared = closest(arrays["centers"], x)
    rows = [
        {"closest_cluster": float(i), "distance_to_cluster": float(np.sqrt(s))}
        for i, s in zip(index, squared, strict=True)
    ]
    return tabular.answer(rows, accept, ["closest_cluster", "distance_to_cluster"])
