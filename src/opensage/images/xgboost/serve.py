"""Loading a model as SageMaker's XGBoost container writes it, and answering requests as its server does.

``load_model(model_dir)`` reads ``xgboost-model`` in any format a container wrote: a pickled Booster
(containers 1.0-1 to 1.2-2), XGBoost's old binary format (1.3-1 to 1.7-1; converted by
:mod:`.legacy`, since XGBoost 3 no longer reads it), or JSON/UBJSON (3.0-5, and OpenSage).
``predict(booster, body, content_type, accept)`` follows the container's algorithm-mode handler:

* requests in ``text/csv`` (no label column, delimiter sniffed, empty cells missing) or ``text/libsvm``
  (zero-based ``index:value`` tokens; any label is ignored); OpenSage also reads ``application/json``
  (``{"instances": [[...], ...]}``) and ``application/jsonlines``;
* ``text/csv`` answers: the predictions joined by commas (one per line under batch transform,
  ``SAGEMAKER_BATCH``); a multi:softprob row is written as its list, ``[0.1, 0.7, 0.2]``;
* ``application/json``: ``{"predictions": [{"score": ...}, ...]}``; ``application/jsonlines``: one
  ``{"score": ...}`` per line (an OpenSage addition);
* with ``SAGEMAKER_INFERENCE_OUTPUT`` (e.g. ``predicted_label,probability``) the selectable outputs
  of the container's ``serve_utils``: ``predicted_label``, ``labels``, ``probability``,
  ``probabilities``, ``raw_score``, ``raw_scores``, ``predicted_score``.

Predictions run on ``OMP_NUM_THREADS`` threads (the platform's cap, or the model's Environment),
never more than the cores the server can really use (:mod:`opensage.compute.cores`).

LIMITATIONS: ``application/x-recordio-protobuf`` requests and answers are not supported.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import pickle
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from opensage.compute import cores
from opensage.contract import BATCH_ENV, DEFAULT_ACCEPT_ENV, INFERENCE_OUTPUT_ENV
from opensage.images.xgboost import legacy

log = logging.getLogger(__name__)
MODEL_NAME = "xgboost-model"
ENSEMBLE_ENV = "SAGEMAKER_INFERENCE_ENSEMBLE"
CSV_TYPES = ("text/csv", "csv")
LIBSVM_TYPES = ("text/libsvm", "text/x-libsvm", "libsvm")
JSON_TYPES = ("application/json", "json")
JSONLINES_TYPES = ("application/jsonlines", "application/x-jsonlines", "jsonlines")
ACCEPTS = ("text/csv", "application/json", "application/jsonlines")
_ACCEPT_ALIASES = {
    "text/csv": "text/csv",
    "csv": "text/csv",
    "application/json": "application/json",
    "json": "application/json",
    "application/jsonlines": "application/jsonlines",
    "application/x-jsonlines": "application/jsonlines",
    "jsonlines": "application/jsonlines",
}
_PICKLE_GLOBALS = {
    ("xgboost.core", "Booster"),
    ("builtins", "bytearray"),
    ("__builtin__", "bytearray"),
    ("copyreg", "_reconstructor"),
    ("builtins", "object"),
}
# Selectable inference: the keys each objective can answer (the container's serve_utils).
_CLASSIFIER_KEYS = ("predicted_label", "labels", "raw_score", "raw_scores")
SELECTABLE_KEYS = {
    "reg:squarederror": ("predicted_score",),
    "reg:logistic": ("predicted_score",),
    "reg:gamma": ("predicted_score",),
    "reg:tweedie": ("predicted_score",),
    "binary:logistic": (*_CLASSIFIER_KEYS, "probability", "probabilities"),
    "binary:logitraw": _CLASSIFIER_KEYS,
    "binary:hinge": _CLASSIFIER_KEYS,
    "multi:softmax": _CLASSIFIER_KEYS,
    "multi:softprob": (*_CLASSIFIER_KEYS, "probability", "probabilities"),
}


class PredictError(ValueError):
    """The request cannot be scored; the message is what the caller must fix."""


class _BoosterUnpickler(pickle.Unpickler):
    """Unpickles a Booster and nothing else: a model file must not run arbitrary code."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"the pickled model refers to {module}.{name}, not only an xgboost Booster")
        return super().find_class(module, name)


def load_model_bytes(raw: bytes) -> Any:
    """A Booster from the bytes of a model file in any format SageMaker's containers write.

    Raises:
        ValueError: the bytes are not an XGBoost model this version can read.
    """
    import xgboost as xgb

    if raw[:1] == b"\x80":
        return _unpickle(raw)
    if legacy.is_legacy_binary(raw):
        raw = json.dumps(legacy.to_json_document(raw)).encode()
    booster = xgb.Booster()
    try:
        booster.load_model(bytearray(raw))
    except xgb.core.XGBoostError as exc:
        raise ValueError(f"not an XGBoost model: {str(exc).splitlines()[0]}") from exc
    return booster


def _unpickle(raw: bytes) -> Any:
    import xgboost as xgb

    with warnings.catch_warnings():  # "loading a serialized model ... from an older version": expected here
        warnings.simplefilter("ignore")
        try:
            booster = _BoosterUnpickler(io.BytesIO(raw)).load()
        except (pickle.UnpicklingError, xgb.core.XGBoostError, EOFError, TypeError, AttributeError) as exc:
            raise ValueError(f"the pickled model cannot be loaded: {str(exc).splitlines()[0]}") from exc
    if not isinstance(booster, xgb.Booster):
        raise ValueError("the pickled model is not an xgboost Booster")
    return _best_trees(booster)


def _best_trees(booster: Any) -> Any:
    """A pickled booster from early stopping predicts with its best trees, as the 1.0-1 to 1.2-2 servers do."""
    best = booster.__dict__.get("best_iteration")
    if best is None or booster.__dict__.get("best_ntree_limit") is None:
        return booster
    rounds = int(best) + 1
    if not 0 < rounds < booster.num_boosted_rounds():
        return booster
    try:
        return booster[:rounds]
    except Exception as exc:  # gblinear cannot be sliced; its predictions use every round anyway
        log.warning("Predicting with every round: the model cannot be cut to its best %d (%s)", rounds, exc)
        return booster


def model_files(model_dir: Path) -> list[Path]:
    """The model files of a model directory: ``xgboost-model`` (and ``xgboost-model-<fold>``), else every file."""
    if not model_dir.is_dir():
        return []
    files = sorted(p for p in model_dir.iterdir() if p.is_file() and not p.name.startswith("."))
    named = [p for p in files if p.name == MODEL_NAME or p.name.startswith(MODEL_NAME + "-")]
    return named or files


def load_model(model_dir: Path) -> Any:
    """The model of a model directory: one Booster, or a list of them (k-fold models, averaged).

    Raises:
        FileNotFoundError: the directory holds no model file.
        ValueError: a file is not a model this version can read.
    """
    if "xgboost" not in sys.modules:
        # xgboost imports scikit-learn when it is installed (seconds, ~80 MB) for an API a model server
        # never uses: mark it absent, in this process only, before xgboost is first imported
        sys.modules.setdefault("sklearn", None)  # type: ignore[arg-type]
    files = model_files(model_dir)
    if not files:
        raise FileNotFoundError(f"no {MODEL_NAME} in the model directory {model_dir}")
    boosters = []
    for path in files:
        try:
            boosters.append(load_model_bytes(path.read_bytes()))
        except ValueError as exc:
            raise ValueError(f"Model at {path} cannot be loaded: {exc}") from exc
        log.info("Loaded the model from %s", path)
    threads = predict_threads(os.environ, cores.usable_cores())
    for booster in boosters:
        booster.set_param({"nthread": threads})
    if len(boosters) > 1 and os.environ.get(ENSEMBLE_ENV, "true").lower() != "false":
        return boosters
    return boosters[0]


def predict_threads(env: Mapping[str, str], usable: int) -> int:
    """XGBoost's threads in the model server: ``OMP_NUM_THREADS`` when set, at most the usable cores."""
    given = env.get("OMP_NUM_THREADS", "")
    return cores.thread_cap(int(given) if given.isdigit() and int(given) > 0 else None, usable)


# --- requests ------------------------------------------------------------------------------------


def _media_type(header: str | None, default: str = "text/csv") -> str:
    return (header or default).split(";")[0].strip().lower()


def _parse_csv(text: str) -> Any:
    """The rows of a CSV body: a float32 matrix, or (empty cells as NaN, ragged rows) a list of rows."""
    lines = [line for line in text.split("\n") if line.strip()]
    first = lines[0]
    delimiter = "," if "," in first else _sniff(first)
    try:  # numpy's parser is three times faster on many rows; what it refuses, the pass below explains
        return np.loadtxt(lines, delimiter=delimiter, dtype=np.float32, ndmin=2, comments=None)
    except ValueError:
        pass
    rows = []
    for lineno, line in enumerate(lines, start=1):
        row = []
        for col, cell in enumerate(line.split(delimiter), start=1):
            cell = cell.strip()
            try:
                row.append(float(cell) if cell else np.nan)
            except ValueError:
                raise PredictError(
                    f"Unable to parse the text/csv request: line {lineno}, column {col}: '{cell[:40]}' is not a "
                    "number. Loading csv data failed; please ensure data is in csv format (features only, no label)."
                ) from None
        rows.append(row)
    return rows


def _sniff(line: str) -> str:
    try:
        delimiter = csv.Sniffer().sniff(line[:512]).delimiter
    except csv.Error:
        return ","
    return "," if delimiter.isalnum() or delimiter == "." else delimiter


def _parse_libsvm(text: str, n_features: int) -> Any:
    import scipy.sparse as sp

    rows, cols, values = [], [], []
    lines = [line for line in text.split("\n") if line.strip()]
    for row, line in enumerate(lines):
        for item in line.split():
            if ":" not in item:
                continue  # the label, if the request has one
            index, _, value = item.partition(":")
            try:
                cols.append(int(index))
                values.append(float(value))
            except ValueError:
                raise PredictError(
                    f"Unable to parse the text/libsvm request: line {row + 1}: '{item[:40]}' is not index:value. "
                    "Loading libsvm data failed; please ensure data is in libsvm format."
                ) from None
            rows.append(row)
    width = max(cols) + 1 if cols else 0
    if n_features and width > n_features:
        raise PredictError(
            f"Feature size of libsvm inference data {width} is larger than feature size of trained model {n_features}."
        )
    return sp.csr_matrix((values, (rows, cols)), shape=(len(lines), max(n_features, width)), dtype=np.float32)


def _json_rows(body: Any) -> list[Any]:
    instances = body.get("instances", body.get("features", body)) if isinstance(body, dict) else body
    if isinstance(instances, list) and instances and not isinstance(instances[0], list | dict):
        instances = [instances]  # one row
    if not isinstance(instances, list):
        raise PredictError('Unable to parse the JSON request: expected {"instances": [[...], ...]}.')
    return [row.get("features", row.get("values")) if isinstance(row, dict) else row for row in instances]


def _parse_json(text: str, lines: bool) -> list[Any]:
    try:
        if lines:
            return [row for line in text.split("\n") if line.strip() for row in _json_rows(json.loads(line))]
        return _json_rows(json.loads(text))
    except json.JSONDecodeError as exc:
        raise PredictError(f"Unable to parse the JSON request: {exc}") from exc


def parse_request(payload: bytes, content_type: str, n_features: int) -> Any:
    """The request's rows: a dense float32 array, or a CSR matrix for libsvm.

    Raises:
        PredictError: empty body, unsupported content type, malformed data, wrong number of features.
    """
    media = _media_type(content_type)
    text = payload.decode("utf-8", "replace").strip()
    if not text:
        raise PredictError("The request body is empty.")
    if media in LIBSVM_TYPES:
        return _parse_libsvm(text, n_features)
    if media in CSV_TYPES:
        rows = _parse_csv(text)
    elif media in JSON_TYPES or media in JSONLINES_TYPES:
        rows = _parse_json(text, media in JSONLINES_TYPES)
    else:
        raise PredictError(
            f"Content-type {content_type} is not supported. Supported content types are text/csv and text/libsvm "
            "(and application/json, application/jsonlines)."
        )
    try:
        matrix = np.asarray(rows, dtype=np.float32)
    except (ValueError, TypeError) as exc:
        raise PredictError(
            f"Unable to parse the {media} request: every row must be a list of numbers ({exc})."
        ) from exc
    if matrix.ndim != 2 or matrix.shape[0] == 0:
        raise PredictError(f"Unable to parse the {media} request: every row must have the same number of features.")
    if n_features and matrix.shape[1] != n_features:
        raise PredictError(
            f"Feature size mismatch: the model expects {n_features} features, the request has {matrix.shape[1]}."
        )
    return matrix


# --- answers -------------------------------------------------------------------------------------


def _accept(accept: str | None, env: Mapping[str, str]) -> str:
    """The answer's media type: the first supported one the caller accepts (``*/*``: the default)."""
    for item in (accept or "").split(","):
        media = _media_type(item, "")
        if media in ("", "*/*"):
            media = _media_type(env.get(DEFAULT_ACCEPT_ENV), "text/csv")
        if media in _ACCEPT_ALIASES:
            return _ACCEPT_ALIASES[media]
    raise PredictError(
        f"{accept} is not an accepted Accept type. Please choose one of the following: {', '.join(ACCEPTS)}."
    )


def _predictions(model: Any, rows: Any) -> np.ndarray:
    boosters: Sequence[Any] = model if isinstance(model, list | tuple) else [model]
    outputs = [booster.inplace_predict(rows, validate_features=False) for booster in boosters]
    return outputs[0] if len(outputs) == 1 else np.mean(outputs, axis=0)


def predict(booster: Any, payload: bytes, content_type: str, accept: str = "") -> tuple[bytes, str]:
    """Score a request body; returns ``(body, content_type)`` as the container answers.

    Raises:
        PredictError: a problem with the request (the caller's to fix).
    """
    env = os.environ
    first = booster[0] if isinstance(booster, list | tuple) else booster
    rows = parse_request(payload, content_type, first.num_features())
    media = _accept(accept, env)
    scores = _predictions(booster, rows)
    batch = bool(env.get(BATCH_ENV))
    if env.get(INFERENCE_OUTPUT_ENV):
        return _selected_response(first, scores, env[INFERENCE_OUTPUT_ENV], media, batch), media
    if media == "text/csv":
        text = "\n".join(map(str, scores.tolist())) + "\n" if batch else ",".join(map(str, scores.tolist()))
        return text.encode(), media
    records = [{"score": score} for score in scores.tolist()]
    if media == "application/json":
        return json.dumps({"predictions": records}).encode(), media
    return "".join(json.dumps(r) + "\n" for r in records).encode(), media


# --- selectable inference (SAGEMAKER_INFERENCE_OUTPUT) ------------------------------------------


def _objective(booster: Any) -> tuple[str, int]:
    config = json.loads(booster.save_config())["learner"]
    num_class = int(config["learner_model_param"].get("num_class", "0") or 0)
    return config["objective"]["name"], num_class


def selected_predictions(scores: np.ndarray, keys: Sequence[str], objective: str, num_class: int) -> list[dict]:
    """One dict per row with the selected keys (NaN for keys the objective cannot answer)."""
    if objective not in SELECTABLE_KEYS:
        raise ValueError(f"Objective `{objective}` unsupported for selectable inference predictions.")
    valid = [k for k in keys if k in SELECTABLE_KEYS[objective]]
    invalid = [k for k in keys if k not in SELECTABLE_KEYS[objective]]
    if invalid:
        log.warning("Selected key(s) %s incompatible for objective '%s'", invalid, objective)
    out = []
    for raw in scores:
        row: dict[str, Any] = {key: _selected_value(key, objective, raw, num_class) for key in valid}
        row.update({key: float("nan") for key in invalid})
        out.append(row)
    return out


def _selected_value(key: str, objective: str, raw: Any, num_class: int) -> Any:
    vector = objective == "multi:softprob"
    if key == "predicted_score":
        return raw.item()
    if key == "labels":
        return [0, 1] if objective.startswith("binary:") else list(range(num_class))
    if key == "predicted_label":
        if vector:
            return int(np.argmax(raw))
        if objective == "binary:logistic":
            return int(raw > 0.5)
        if objective == "binary:logitraw":
            return int(raw > 0)
        return raw.item()
    if key in ("probability", "raw_score") and vector:
        return max(raw).item()
    if key in ("probabilities", "raw_scores") and vector:
        return raw.tolist()
    if key in ("probability", "raw_score"):
        return raw.item()
    positive = raw.item()
    return [1.0 - positive, positive]  # probabilities, raw_scores of a binary objective


def _selected_response(booster: Any, scores: np.ndarray, selection: str, media: str, batch: bool) -> bytes:
    keys = selection.replace(" ", "").lower().split(",")
    objective, num_class = _objective(booster)
    rows = selected_predictions(scores, keys, objective, num_class)
    if media == "application/json":
        return json.dumps({"predictions": rows}).encode()
    if media == "application/jsonlines":
        return "".join(json.dumps(row) + "\n" for row in rows).encode()
    lines = [",".join(f'"{row[k]}"' if isinstance(row[k], list) else str(row[k]) for k in keys) for row in rows]
    return ("\n".join(lines) + ("\n" if batch else "")).encode()
