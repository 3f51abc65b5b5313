"""Linear Learner's model server: ``model_algo-1`` loaded, requests answered as the container does.

Requests: ``application/x-recordio-protobuf`` (the SDK's ``LinearLearnerPredictor``), ``text/csv``
(no label) or JSON (``{"instances": [{"features": [...]}, ...]}``). Answers, one per row: a binary
classifier's ``score`` (the probability of class 1) and ``predicted_label`` (by the threshold chosen
in training); a multiclass classifier's ``score`` (one probability per class) and
``predicted_label``; a regressor's ``score``. In RecordIO-protobuf they are each record's ``label``
entries (what the predictor's deserializer reads), in JSON ``{"predictions": [{"score": 0.93,
"predicted_label": 1}, ...]}``; ``text/csv`` gives ``predicted_label`` (a regressor's ``score``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from opensage.images import tabular
from opensage.images.linear_learner.scoring import predictions
from opensage.images.tabular import PredictError

__all__ = ["PredictError", "load_model", "predict"]


def load_model(model_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    return tabular.load_model_file(Path(model_dir), "linear-learner", "a Linear Learner")


def predict(
    model: tuple[dict[str, Any], dict[str, Any]], body: bytes, content_type: str, accept: str
) -> tuple[bytes, str]:
    meta, arrays = model
    x = tabular.request_matrix(body, content_type, int(meta["feature_dim"]))
    score, label = predictions(meta, x @ arrays["weight"] + arrays["bias"])
    if label is None:
        rows = [{"score": s} for s in score]
        return tabular.answer(rows, accept, ["score"])
    rows = [{"score": s, "predicted_label": int(lab)} for s, lab in zip(score, label, strict=True)]
    return tabular.answer(rows, accept, ["predicted_label"])
