"""Plain Python serving: the user's ``model_fn`` and friends, with NumPy decoding and encoding by default."""

from __future__ import annotations

from typing import Any

from opensage.images.framework import encoders
from opensage.images.framework.inference import HandlerMissing, PredictError, entry_points

__all__ = ["PredictError", "load_model", "predict"]


def default_model_fn(model_dir: str) -> Any:
    raise HandlerMissing("Please provide a model_fn implementation in your inference script.")


def default_predict_fn(data: Any, model: Any) -> Any:
    if callable(getattr(model, "predict", None)):
        return model.predict(data)
    return model(data)


load_model, predict = entry_points(
    default_model_fn=default_model_fn,
    default_input_fn=encoders.decode,
    default_predict_fn=default_predict_fn,
    default_output_fn=encoders.encode,
)
