"""Loading an XGBoost model as SageMaker's container writes it, and predicting like its server.

``xgboost-model`` is XGBoost's own format (containers 1.3-1 and later) or a pickled Booster (1.0-1
to 1.2-2); both load. Requests in text/csv, text/libsvm, application/json and
application/jsonlines; answers in text/csv, application/json or application/jsonlines.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import sys
from pathlib import Path
from typing import Any

import numpy as np

MODEL_NAME = "xgboost-model"


class PredictError(ValueError):
    """The request cannot be scored; the message is what the caller must fix."""


def load_model_bytes(raw: bytes) -> Any:
    import xgboost as xgb

    if raw[:1] == b"\x80":  # a pickle (older containers)
        model = pickle.loads(raw)  # noqa: S301 - the model file of the user's own training job
        if not isinstance(model, xgb.Booster):
            raise ValueError("the pickled model is not an xgboost Booster")
        return model
    booster = xgb.Booster()
    booster.load_model(bytearray(raw))
    return booster


def load_model(model_dir: Path) -> Any:
    """Load the model of a model-server process (this process serves nothing else)."""
    # xgboost would import scikit-learn (1.3 s, ~80 MB) for an API this server never uses
    sys.modules.setdefault("sklearn", None)  # type: ignore[arg-type]
    path = model_dir / MODEL_NAME
    if not path.exists():
        candidates = [p for p in model_dir.iterdir() if p.is_file()] if model_dir.is_dir() else []
        if len(candidates) != 1:
            raise FileNotFoundError(f"no {MODEL_NAME} in the model directory")
        path = candidates[0]
    return load_model_bytes(path.read_bytes())


def _parse(payload: bytes, content_type: str, n_features: int) -> np.ndarray:
    base = (content_type or "text/csv").split(";")[0].strip().lower()
    text = payload.decode("utf-8", "replace").strip()
    if not text:
        raise PredictError("The request body is empty.")
    try:
        if base in ("text/csv", "csv"):
            rows = [[float(c) if c.strip() else np.nan for c in line.split(",")] for line in text.splitlines() if line]
        elif base in ("application/json",):
            body = json.loads(text)
            instances = body.get("instances", body) if isinstance(body, dict) else body
            rows = [r.get("features", r) if isinstance(r, dict) else r for r in instances]
            rows = [r if isinstance(r, list) else [r] for r in rows]
        elif base in ("application/jsonlines", "application/x-jsonlines"):
            rows = []
            for line in text.splitlines():
                item = json.loads(line)
                rows.append(item.get("features", item) if isinstance(item, dict) else item)
        elif base in ("text/libsvm", "text/x-libsvm"):
            rows = []
            for line in text.splitlines():
                values = [np.nan] * n_features
                for token in line.split()[1:] if ":" not in line.split()[0] else line.split():
                    index, _, value = token.partition(":")
                    values[int(index)] = float(value)
                rows.append(values)
        else:
            raise PredictError(
                f"Content type {content_type} is not supported; use text/csv, text/libsvm, "
                "application/json or application/jsonlines."
            )
        matrix = np.asarray(rows, dtype=np.float32)
    except (ValueError, IndexError, TypeError, AttributeError) as exc:
        if isinstance(exc, PredictError):
            raise
        raise PredictError(f"Unable to parse the {base} request body: {exc}") from exc
    if matrix.ndim != 2:
        raise PredictError("Every row of the request must have the same number of features.")
    if n_features and matrix.shape[1] != n_features:
        raise PredictError(
            f"Feature size mismatch: the model expects {n_features} features, the request has {matrix.shape[1]}."
        )
    return matrix


def predict(booster: Any, payload: bytes, content_type: str, accept: str = "text/csv") -> tuple[bytes, str]:
    matrix = _parse(payload, content_type, booster.num_features())
    scores = booster.inplace_predict(matrix)  # no DMatrix per request
    accept = (accept or "text/csv").split(",")[0].split(";")[0].strip().lower()
    if accept in ("*/*", ""):
        accept = "text/csv"
    rows = scores.tolist()
    if accept == "text/csv":
        lines = [",".join(str(v) for v in r) if isinstance(r, list) else str(r) for r in rows]
        # one prediction per line in batch transform (SAGEMAKER_BATCH), comma-separated for real-time calls
        separator = "\n" if scores.ndim > 1 or os.environ.get("SAGEMAKER_BATCH") == "true" else ","
        return separator.join(lines).encode(), "text/csv"
    if accept == "application/json":
        return json.dumps({"predictions": [{"score": r} for r in rows]}).encode(), "application/json"
    if accept in ("application/jsonlines", "application/x-jsonlines"):
        out = io.StringIO()
        for r in rows:
            out.write(json.dumps({"score": r}) + "\n")
        return out.getvalue().encode(), "application/jsonlines"
    raise PredictError(
        f"Accept type {accept} is not supported; use text/csv, application/json or application/jsonlines."
    )
