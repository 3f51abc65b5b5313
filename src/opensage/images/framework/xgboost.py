"""XGBoost in script mode (SageMaker's XGBoost container with a user module).

Without handlers of the user's own, requests are served as by the built-in algorithm (CSV, libsvm,
JSON); with some, the missing ones default to: the request's rows, ``booster.predict``, NumPy encoding.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from opensage.images.framework import encoders
from opensage.images.framework.inference import PredictError, entry_points
from opensage.images.xgboost import serve

__all__ = ["PredictError", "load_model", "predict"]


def default_model_fn(model_dir: str) -> Any:
    return serve.load_model(Path(model_dir))


def default_input_fn(body: bytes, content_type: str) -> Any:
    try:
        return serve.parse_request(body, content_type, 0)
    except serve.PredictError as exc:
        raise ValueError(str(exc)) from exc


def default_predict_fn(data: Any, model: Any) -> Any:
    import xgboost as xgb

    booster = model[0] if isinstance(model, list | tuple) else model
    return booster.predict(data if isinstance(data, xgb.DMatrix) else xgb.DMatrix(data))


def default_transform_fn(model: Any, body: bytes, content_type: str, accept: str) -> tuple[bytes, str]:
    try:
        return serve.predict(model, body, content_type, accept)
    except serve.PredictError as exc:
        raise PredictError(str(exc)) from exc


load_model, predict = entry_points(
    default_model_fn=default_model_fn,
    default_input_fn=default_input_fn,
    default_predict_fn=default_predict_fn,
    default_output_fn=encoders.encode,
    default_transform_fn=default_transform_fn,
    default_accept=encoders.CSV,
)
