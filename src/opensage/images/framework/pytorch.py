"""PyTorch serving defaults (SageMaker's PyTorch inference toolkit).

``model.pt`` loaded as TorchScript when there is no ``model_fn``; requests decoded to a float tensor;
``model(data)`` under ``torch.no_grad()``; tensors encoded back as JSON, CSV or NPY.
"""

from __future__ import annotations

import os
from typing import Any

from opensage.images.framework import encoders
from opensage.images.framework.inference import PredictError, entry_points

__all__ = ["PredictError", "load_model", "predict"]
DEFAULT_MODEL_FILENAME = "model.pt"


def default_model_fn(model_dir: str) -> Any:
    import torch

    path = os.path.join(model_dir, DEFAULT_MODEL_FILENAME)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"Failed to load model with default model_fn: missing file {DEFAULT_MODEL_FILENAME}. Save a TorchScript "
            "model there or provide a model_fn implementation in your inference script."
        )
    model = torch.jit.load(path, map_location="cpu")
    model.eval()
    return model


def default_input_fn(body: bytes, content_type: str) -> Any:
    import torch

    return torch.as_tensor(encoders.decode(body, content_type), dtype=torch.float32)


def default_predict_fn(data: Any, model: Any) -> Any:
    import torch

    with torch.no_grad():
        model.eval()
        return model(data)


load_model, predict = entry_points(
    default_model_fn=default_model_fn,
    default_input_fn=default_input_fn,
    default_predict_fn=default_predict_fn,
    default_output_fn=encoders.encode,
)
