"""TensorFlow serving: a SavedModel answered through the TensorFlow Serving REST contract of SageMaker's TF container.

The model directory holds a SavedModel (``saved_model.pb``) at its top, in a numbered version
directory (``1/``, ``000000001/``: the highest is served), or in ``<name>/<version>/``. Requests
go to its ``serving_default`` signature as TensorFlow Serving's ``predict`` takes them, after the
container's own rewriting:

* ``application/json`` with ``instances``, ``inputs`` (columnar) or ``examples``: as it is;
  JSON Lines (objects one after another): their list as ``instances``; any other JSON value:
  ``instances`` (a value that is not a list of lists is wrapped in a list first);
* ``text/csv``: one instance per line, a list when the line has several columns.

Answers are TensorFlow Serving's: ``{"predictions": [...]}`` for ``instances`` (one value per
instance with one output, a dict of outputs per instance with several), ``{"outputs": ...}`` for
``inputs``; a request the model cannot take is answered 400 with ``{"error": "..."}``.
A model with ``code/inference.py`` (the SDK's ``TensorFlowModel(entry_point=...)`` repacks it so)
has its requests go through that script's ``handler``, or ``input_handler`` and ``output_handler``,
as the container runs them (:mod:`.tfhandlers`). Only TensorFlow Serving's ``predict`` method is served.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from opensage.images.framework import inference, tfhandlers

__all__ = ["PredictError", "load_model", "predict"]
_JSON = ("application/json", "application/jsonlines", "application/jsons")


class PredictError(ValueError):
    """A request the model cannot take (answered 400, as TensorFlow Serving answers it)."""

    def __str__(self) -> str:
        return json.dumps({"error": super().__str__()})


@dataclass(slots=True)
class Served:
    path: Path
    function: Any  # the serving_default concrete function
    inputs: dict[str, Any]  # name -> TensorSpec
    handler: Any = None  # inference.py's request handler, when the model has one
    rest: Any = None  # the TensorFlow Serving REST API that handler calls (tfhandlers.RestServer)


def find_saved_model(model_dir: Path) -> Path:
    """The SavedModel directory to serve under ``model_dir`` (the highest version)."""
    if (model_dir / "saved_model.pb").exists():
        return model_dir
    candidates = sorted(
        (p.parent for p in model_dir.glob("*/saved_model.pb") if p.parent.name.isdigit()),
        key=lambda p: int(p.name),
    ) or sorted(
        (p.parent for p in model_dir.glob("*/*/saved_model.pb") if p.parent.name.isdigit()),
        key=lambda p: int(p.name),
    )
    if not candidates:
        found = sorted(str(p.relative_to(model_dir)) for p in model_dir.rglob("*") if p.is_file())[:10]
        raise FileNotFoundError(
            "no SavedModel (saved_model.pb) in the model artifact, neither at its top nor in a version directory "
            f"such as 1/; it holds: {', '.join(found) or 'nothing'}. Save the model with model.export(path) or "
            "tf.saved_model.save(model, path) under SM_MODEL_DIR/1."
        )
    return candidates[-1]


def load_model(model_dir: Path) -> Served:
    import tensorflow as tf

    path = find_saved_model(Path(model_dir))
    loaded = tf.saved_model.load(str(path))
    if "serving_default" not in loaded.signatures:
        raise ValueError(f"the SavedModel at {path} has no serving_default signature: {sorted(loaded.signatures)}")
    function = loaded.signatures["serving_default"]
    function._opensage_owner = loaded  # keep the trackable objects alive
    _, kwargs = function.structured_input_signature
    served = Served(path, function, dict(kwargs))
    handler = tfhandlers.from_module(inference.user_module(Path(model_dir)))
    if handler is not None:
        served.handler, served.rest = handler, tfhandlers.RestServer(lambda request: answer(served, request))
    return served


def tfs_request(body: bytes, content_type: str) -> dict[str, Any]:
    """The TensorFlow Serving request that SageMaker's container makes of an InvokeEndpoint body."""
    media = (content_type or "application/json").split(";")[0].strip().lower()
    text = body.decode("utf-8", "replace")
    if media == "text/csv":
        rows = []
        for line in text.strip().splitlines():
            if not line.strip():
                continue
            cells = [_cell(c) for c in line.split(",")]
            rows.append(cells if len(cells) > 1 else cells[0])
        return {"instances": rows}
    if media not in _JSON:
        raise PredictError(f"Unsupported Media Type: {content_type or 'Unknown'}")
    if re.search(r"[}\]]\s*[\[{]", text):  # JSON Lines
        try:
            return {"instances": [json.loads(line) for line in text.strip().splitlines() if line.strip()]}
        except ValueError as exc:
            raise PredictError(f"JSON Parse error: {exc}") from exc
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise PredictError(f"JSON Parse error: {exc}") from exc
    if isinstance(doc, dict) and ({"instances", "inputs", "examples"} & set(doc)):
        return doc
    if not (isinstance(doc, list) and doc and isinstance(doc[0], list)):
        doc = [doc]
    return {"instances": doc}


def _cell(text: str) -> Any:
    text = text.strip()
    try:
        return float(text) if any(c in text for c in ".eE") else int(text)
    except ValueError:
        return text.strip('"')


def _tensor(value: Any, spec: Any, name: str) -> Any:
    import tensorflow as tf

    try:
        array = np.asarray(value, dtype=spec.dtype.as_numpy_dtype if spec.dtype != tf.string else object)
        tensor = tf.constant(array, dtype=spec.dtype)
    except (TypeError, ValueError) as exc:
        raise PredictError(f"input '{name}' cannot be read as {spec.dtype.name} of shape {spec.shape}: {exc}") from exc
    if not spec.shape.is_compatible_with(tensor.shape):
        raise PredictError(
            f"input '{name}' has shape {list(tensor.shape)}, which does not match the signature's "
            f"{spec.shape.as_list() if spec.shape.rank is not None else spec.shape} (None: any size)"
        )
    return tensor


def _inputs(served: Served, request: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """(the signature's keyword arguments, whether the request was in row format)."""
    names = list(served.inputs)
    if "examples" in request:
        raise PredictError("'examples' needs the classify or regress method, which this endpoint does not serve.")
    if "instances" in request:
        instances = request["instances"]
        if not isinstance(instances, list):
            raise PredictError("Failed to process element: 0 of 'instances' list. Error: 'instances' must be a list.")
        if len(names) == 1 and not (instances and isinstance(instances[0], dict)):
            return {names[0]: _tensor(instances, served.inputs[names[0]], names[0])}, True
        columns = {n: [i.get(n) if isinstance(i, dict) else None for i in instances] for n in names}
        missing = [n for n, c in columns.items() if any(v is None for v in c)]
        if missing:
            raise PredictError(f"instances must name each of the inputs {names}; missing: {missing}")
        return {n: _tensor(c, served.inputs[n], n) for n, c in columns.items()}, True
    given = request["inputs"]
    if len(names) == 1 and not isinstance(given, dict):
        return {names[0]: _tensor(given, served.inputs[names[0]], names[0])}, False
    if not isinstance(given, dict) or set(given) != set(names):
        raise PredictError(f"inputs must be a JSON object with the signature's inputs {names}")
    return {n: _tensor(given[n], served.inputs[n], n) for n in names}, False


def answer(served: Served, request: dict[str, Any]) -> dict[str, Any]:
    """TensorFlow Serving's answer to a ``predict`` request (``instances`` or ``inputs``).

    Raises:
        PredictError: the request does not fit the signature.
    """
    import tensorflow as tf

    kwargs, rows = _inputs(served, request)
    try:
        outputs = served.function(**kwargs)
    except (tf.errors.InvalidArgumentError, ValueError, TypeError) as exc:
        raise PredictError(str(exc).strip().splitlines()[0]) from exc
    values = {k: v.numpy() for k, v in outputs.items()}
    if rows:
        if len(values) == 1:
            return {"predictions": next(iter(values.values())).tolist()}
        count = len(next(iter(values.values())))
        return {"predictions": [{k: _plain(v[i]) for k, v in values.items()} for i in range(count)]}
    only = next(iter(values.values())) if len(values) == 1 else None
    return {"outputs": only.tolist() if only is not None else {k: v.tolist() for k, v in values.items()}}


def predict(served: Served, body: bytes, content_type: str, accept: str) -> tuple[bytes, str]:
    if served.handler is not None:
        return tfhandlers.run(served.handler, served.rest, body, content_type, accept)
    result = answer(served, tfs_request(body, content_type))
    media = (accept or "").split(",")[0].strip()
    if media in ("application/jsonlines", "application/jsons"):
        return json.dumps(result).encode(), media
    return json.dumps(result).encode(), "application/json"


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    array = np.asarray(value)
    if array.dtype.kind in "SO":
        return [v.decode() if isinstance(v, bytes) else v for v in array.ravel().tolist()]
    return array.tolist()
