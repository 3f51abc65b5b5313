"""scikit-learn serving defaults (SageMaker's scikit-learn container): NumPy in, ``model.predict``, NumPy out."""

from __future__ import annotations

from typing import Any

from opensage.images.framework import encoders
from opensage.images.framework.inference import HandlerMissing, PredictError, entry_points

__all__ = ["PredictError", "load_model", "predict"]


def default_model_fn(model_dir: str) -> Any:
    raise HandlerMissing(
        "Please provide a model_fn implementation in your inference script: the scikit-learn image has no "
        "default way to load a model (e.g. def model_fn(model_dir): return joblib.load(os.path.join(model_dir, "
        "'model.joblib')))."
    )


def default_predict_fn(data: Any, model: Any) -> Any:
    return model.predict(data)


load_model, predict = entry_points(
    default_model_fn=default_model_fn,
    default_input_fn=encoders.decode,
    default_predict_fn=default_predict_fn,
    default_output_fn=encoders.encode,
)
