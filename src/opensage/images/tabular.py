"""What SageMaker's first-party tabular algorithms (Linear Learner, K-Means, PCA, KNN...) share.

* **The job**: hyperparameters checked against the algorithm's schema with the containers'
  messages (``ClientError: Unable to initialize the algorithm. Failed to validate input
  hyperparameters. (caused by ValidationError)`` then what is wrong, in JSON-schema words); the
  ``ClientError:`` / ``AlgorithmError:`` reason in ``output/failure``; the log's metric lines
  (``#quality_metric: host=algo-1, test msd <loss>=0.42``) that the algorithms' metric definitions match.
* **Channels**: every file of a channel, as ``application/x-recordio-protobuf`` (the default, what the
  SDK's ``record_set()`` writes) or ``text/csv`` (label in the first column when the algorithm reads
  one; ``label_size=0`` says there is none); ``RecordWrapperType: RecordIO`` is the same framing.
* **Inference bodies**: RecordIO-protobuf, ``text/csv`` (no label) and the containers' JSON
  (``{"instances": [{"features": [...]}, ...]}`` or ``{"instances": [[...], ...]}``); answers in
  RecordIO-protobuf (outputs in each record's ``label``), ``application/json``
  (``{"predictions": [{...}, ...]}``), ``application/jsonlines`` and ``text/csv``.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from opensage.contract import CHANNEL_CONTENT_TYPE, CHANNEL_INPUT_MODE, RESOURCE_CURRENT_HOST, RESOURCE_HOSTS, Layout
from opensage.images import recordio

log = logging.getLogger(__name__)
MODEL_FILE = "model_algo-1"
_INIT = "Unable to initialize the algorithm."


class ClientError(Exception):
    """A mistake in the job's input (hyperparameters, channels, data): ``ClientError: <message>``."""


class PredictError(ValueError):
    """A request that cannot be answered; the message is what the caller must fix."""


# --- hyperparameters ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Param:
    """One hyperparameter: its JSON-schema type, bounds or choices, and default (``"auto"`` allowed)."""

    kind: str  # integer | number | boolean | string
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: float | None = None
    exclusive_maximum: float | None = None
    choices: tuple[str, ...] = ()
    auto: bool = False
    required: bool = False


def _fail_hp(message: str, rule: str, name: str) -> ClientError:
    return ClientError(
        f"{_INIT} Failed to validate input hyperparameters. (caused by ValidationError)\n\nCaused by: {message}\n\n"
        f"Failed validating '{rule}' in schema['properties']['{name}']"
    )


def _convert(name: str, raw: Any, p: Param) -> Any:
    text = str(raw).strip()
    if p.auto and text == "auto":
        return "auto"
    if p.kind == "boolean":
        if text.lower() in ("true", "1"):
            return True
        if text.lower() in ("false", "0"):
            return False
        raise _fail_hp(f"'{text}' is not of type 'boolean'", "type", name)
    if p.kind == "integer":
        try:
            number = float(text)
            if not number.is_integer():
                raise ValueError
            return int(number)
        except ValueError:
            raise _fail_hp(f"'{text}' is not of type 'integer'", "type", name) from None
    if p.kind == "number":
        try:
            value = float(text)
        except ValueError:
            raise _fail_hp(f"'{text}' is not of type 'number'", "type", name) from None
        if not math.isfinite(value):
            raise _fail_hp(f"'{text}' is not a finite number", "type", name)
        return value
    if p.choices and text not in p.choices:
        shown = ", ".join(f"'{c}'" for c in p.choices)
        raise _fail_hp(f"'{text}' is not one of [{shown}]", "enum", name)
    return text


def _bounds(name: str, value: Any, p: Param) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return
    checks = (
        (p.minimum, "minimum", value < (p.minimum or 0), "less than the minimum of"),
        (p.maximum, "maximum", value > (p.maximum or 0), "greater than the maximum of"),
        (
            p.exclusive_minimum,
            "exclusiveMinimum",
            value <= (p.exclusive_minimum or 0),
            "less than or equal to the minimum of",
        ),
        (
            p.exclusive_maximum,
            "exclusiveMaximum",
            value >= (p.exclusive_maximum or 0),
            "greater than or equal to the maximum of",
        ),
    )
    for bound, rule, broken, words in checks:
        if bound is not None and broken:
            raise _fail_hp(f"{value:g} is {words} {bound:g}", rule, name)


def validate(given: Mapping[str, Any], schema: Mapping[str, Param], algorithm: str) -> dict[str, Any]:
    """Typed hyperparameters with the defaults filled in.

    Raises:
        ClientError: a missing required one, an unknown one, a wrong type or a value out of range,
            in the containers' words.
    """
    for name in schema:
        if schema[name].required and name not in given:
            raise ClientError(
                f"{_INIT} Failed to validate input hyperparameters. (caused by ValidationError)\n\n"
                f"Caused by: '{name}' is a required property\n\nFailed validating 'required' in schema"
            )
    unknown = sorted(n for n in given if n not in schema and not n.startswith("_") and not n.startswith("sagemaker_"))
    if unknown:
        raise ClientError(
            f"{_INIT} Failed to validate input hyperparameters. (caused by ValidationError)\n\nCaused by: "
            f"Additional properties are not allowed ({', '.join(repr(u) for u in unknown)} "
            f"{'was' if len(unknown) == 1 else 'were'} unexpected). {algorithm} takes: {', '.join(sorted(schema))}"
        )
    out: dict[str, Any] = {}
    for name, p in schema.items():
        if name in given:
            value = _convert(name, given[name], p)
            _bounds(name, value, p)
            out[name] = value
        else:
            out[name] = p.default
    return out


# --- the job --------------------------------------------------------------------------------------


@dataclass(slots=True)
class Job:
    """One training job as the container sees it."""

    layout: Layout
    hyperparameters: dict[str, Any]
    channels: dict[str, dict[str, Any]]
    hosts: list[str] = field(default_factory=lambda: ["algo-1"])
    current_host: str = "algo-1"

    @classmethod
    def read(cls, layout: Layout) -> Job:
        def load(path: Path) -> Any:
            if not path.exists():
                return {}
            try:
                return json.loads(path.read_text())
            except ValueError as exc:
                raise ClientError(f"{path.name} is not valid JSON: {exc}") from exc

        resource = load(layout.resource_config_file)
        hosts = list(resource.get(RESOURCE_HOSTS) or ["algo-1"])
        return cls(
            layout,
            load(layout.hyperparameters_file),
            load(layout.input_data_config_file),
            hosts,
            str(resource.get(RESOURCE_CURRENT_HOST) or hosts[0]),
        )

    def quality(self, channel: str, metric: str, value: float, *, loss: bool, epoch: int | None = None) -> None:
        """Log one metric as the containers do (what the metric definitions' regexes match)."""
        where = f"host={self.current_host}" + (f", epoch={epoch}" if epoch is not None else "")
        log.info(
            "#quality_metric: %s, %s %s <%s>=%r", where, channel, metric, "loss" if loss else "score", float(value)
        )


def check_channels(
    channels: Mapping[str, Any], allowed: Sequence[str], required: Sequence[str], algorithm: str
) -> None:
    for name in channels:
        if name not in allowed:
            raise ClientError(
                f"{_INIT} Failed to validate input data configuration. (caused by ValidationError)\n\nCaused by: "
                f"Additional properties are not allowed ('{name}' was unexpected). {algorithm} reads the channels "
                f"{', '.join(repr(a) for a in allowed)}."
            )
    for name in required:
        if name not in channels:
            raise ClientError(
                f"{_INIT} Failed to validate input data configuration. (caused by ValidationError)\n\nCaused by: "
                f"'{name}' is a required property. {algorithm} needs a '{name}' channel."
            )


def _media(content_type: str | None) -> tuple[str, dict[str, str]]:
    parts = [p.strip() for p in (content_type or recordio.CONTENT_TYPE).split(";")]
    params = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
    return parts[0].lower(), {k.strip().lower(): v.strip() for k, v in params.items()}


def _csv(text: bytes | str, label_size: int, where: str) -> tuple[np.ndarray, np.ndarray | None]:
    raw = text.decode() if isinstance(text, bytes) else text
    lines = [line for line in raw.splitlines() if line.strip()]
    if not lines:
        return np.zeros((0, 0), dtype=np.float32), None
    try:
        matrix = np.loadtxt(io.StringIO("\n".join(lines)), delimiter=",", dtype=np.float32, ndmin=2)
    except ValueError as exc:
        raise ClientError(f"{where}: not CSV of numbers: {exc}") from exc
    if label_size:
        return matrix[:, label_size:], matrix[:, 0]
    return matrix, None


def _csv_file(path: Path, label_size: int, data: bytes | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    source: Any = path if data is None else pa.BufferReader(data)
    try:
        table = pacsv.read_csv(source, read_options=pacsv.ReadOptions(autogenerate_column_names=True))
    except Exception as exc:  # pyarrow's ArrowInvalid and friends
        raise ClientError(f"{path.name}: not CSV of numbers: {str(exc).splitlines()[0]}") from exc
    if table.num_rows == 0:
        return np.zeros((0, 0), dtype=np.float32), None
    matrix = np.empty((table.num_rows, table.num_columns), dtype=np.float32)  # filled column by column, no copies
    try:
        for i, column in enumerate(table.columns):
            matrix[:, i] = column.to_numpy()
    except (TypeError, ValueError, pa.ArrowInvalid) as exc:
        raise ClientError(f"{path.name}: not CSV of numbers: {exc}") from exc
    if label_size:
        return matrix[:, label_size:], matrix[:, 0]
    return matrix, None


def load_channel(
    job: Job, name: str, *, supervised: bool, feature_dim: int | None, sparse: bool = False
) -> tuple[Any, np.ndarray | None]:
    """A channel's ``(features, labels)`` from all its files (features a SciPy CSR matrix if ``sparse``).

    Raises:
        ClientError: no data, an unsupported content type, unreadable data, or rows whose width is
            not ``feature_dim``.
    """
    config = job.channels.get(name) or {}
    media, params = _media(config.get(CHANNEL_CONTENT_TYPE))
    directory = job.layout.channel_dir(name)
    piped = config.get(CHANNEL_INPUT_MODE) == "Pipe"
    if piped:  # one stream: the channel's objects one after the other, through <channel>_0
        files = [directory.parent / f"{name}_0"]
        log.info("Channel '%s': reading the pipe %s", name, files[0].name)
    else:
        files = sorted(p for p in directory.rglob("*") if p.is_file() and not p.name.startswith("."))
    parts: list[tuple[np.ndarray, np.ndarray | None]] = []
    for path in files:
        data = path.read_bytes() if piped else None
        if (len(data) if data is not None else path.stat().st_size) == 0:
            continue
        if media in (recordio.CONTENT_TYPE, "application/x-recordio", "recordio-protobuf"):
            raw = data if data is not None else path.read_bytes()
            try:
                if sparse:
                    records = recordio.parse_records(raw)
                    parts.append(recordio.to_sparse(records, feature_dim=int(feature_dim or 0), where=path.name))
                else:
                    parts.append(recordio.read_matrix(raw, feature_dim=feature_dim, where=path.name))
            except recordio.RecordIOError as exc:
                raise ClientError(f"Channel '{name}': {exc}") from exc
        elif media in ("text/csv", "csv"):
            parts.append(_csv_file(path, int(params.get("label_size", "1" if supervised else "0")), data))
        else:
            raise ClientError(
                f"Channel '{name}': content type {media} is not supported; use application/x-recordio-protobuf "
                "or text/csv."
            )
    parts = [p for p in parts if p[0].shape[0]]
    if not parts:
        raise ClientError(f"No training data found in channel '{name}' (directory {directory.name} has no records).")
    if sparse:
        from scipy import sparse as sp

        features = sp.vstack([sp.csr_matrix(p[0]) for p in parts], format="csr")
    else:
        features = np.vstack([p[0] for p in parts])
    if feature_dim is not None and features.shape[1] != feature_dim:
        raise ClientError(
            f"Channel '{name}': the data has {features.shape[1]} features but the hyperparameter feature_dim is "
            f"{feature_dim}; set feature_dim to the width of the data."
        )
    labelled = [p[1] for p in parts if p[1] is not None]
    if supervised and len(labelled) != len(parts):
        raise ClientError(f"Channel '{name}': records without a label; every record needs one (label['values']).")
    labels = np.concatenate(labelled) if supervised else None
    log.info("Channel '%s': %d records of %d features", name, features.shape[0], features.shape[1])
    return features, labels


def run_main(train: Callable[[Job], None]) -> int:
    """Train by the container contract; the process's exit code."""
    logging.basicConfig(
        level=logging.INFO, format="[%(asctime)s %(levelname)s] %(message)s", stream=sys.stdout, force=True
    )
    layout = Layout.from_env()

    def on_sigterm(signum: int, frame: Any) -> None:
        raise SystemExit(143)

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        job = Job.read(layout)
        train(job)
    except ClientError as exc:
        return _fail(layout, f"ClientError: {exc}")
    except Exception as exc:
        log.exception("Training failed")
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return _fail(layout, f"AlgorithmError: {type(exc).__name__}: {first}")
    layout.success_file.parent.mkdir(parents=True, exist_ok=True)
    layout.success_file.write_text("")
    return 0


def _fail(layout: Layout, message: str) -> int:
    log.error("Reporting training FAILURE: %s", message)
    layout.failure_file.parent.mkdir(parents=True, exist_ok=True)
    layout.failure_file.write_text(message + "\n")
    return 1


def entry(argv: Sequence[str], package: str, train: Callable[[], Callable[[Job], None]]) -> None:
    """``python -m <package> train``."""
    if len(argv) < 2 or argv[1] != "train":
        print(f"usage: python -m {package} train", file=sys.stderr)
        sys.exit(2)
    code = run_main(train())
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def quality_definitions(entries: Sequence[tuple[str, str, str]]) -> list[dict[str, str]]:
    """Metric definitions ``{channel}:{metric}`` of the lines :meth:`Job.quality` logs (with an epoch or not)."""
    return [
        {
            "Name": f"{channel}:{metric}",
            "Regex": rf"#quality_metric: host=\S+,(?: epoch=\S+,)? {channel} {pattern} <\w+>=(\S+)",
        }
        for channel, metric, pattern in entries
    ]


# --- inference ------------------------------------------------------------------------------------


def request_matrix(body: bytes, content_type: str, feature_dim: int) -> np.ndarray:
    """The rows of a request, ``feature_dim`` wide.

    Raises:
        PredictError: an unsupported content type, an unreadable body or rows of the wrong width.
    """
    media, _ = _media(content_type or "text/csv")
    try:
        if media in (recordio.CONTENT_TYPE, "application/x-recordio"):
            matrix, _ = recordio.read_matrix(body, feature_dim=feature_dim, where="request")
        elif media in ("text/csv", "csv"):
            matrix, _ = _csv(body, 0, "request")
        elif media in ("application/json", "json"):
            matrix = _json_rows(json.loads(body or b"null"))
        elif media in ("application/jsonlines", "application/x-jsonlines"):
            rows = [_json_rows(json.loads(line)) for line in body.decode().splitlines() if line.strip()]
            matrix = np.vstack(rows) if rows else np.zeros((0, feature_dim), dtype=np.float32)
        else:
            raise PredictError(
                f"Content type {media} is not supported; use application/x-recordio-protobuf, text/csv or "
                "application/json."
            )
    except (recordio.RecordIOError, ClientError, ValueError, UnicodeDecodeError) as exc:
        if isinstance(exc, PredictError):
            raise
        raise PredictError(f"Unable to read the {media} request: {exc}") from exc
    if matrix.size == 0:
        raise PredictError("The request has no rows to score.")
    if matrix.shape[1] != feature_dim:
        raise PredictError(f"The request's rows have {matrix.shape[1]} features; the model takes {feature_dim}.")
    return matrix


def _json_rows(doc: Any) -> np.ndarray:
    instances = doc.get("instances", doc.get("features")) if isinstance(doc, dict) else doc
    if isinstance(doc, dict) and "features" in doc and "instances" not in doc:
        instances = [doc]
    if not isinstance(instances, list):
        raise ValueError('expected {"instances": [{"features": [...]}, ...]} or a list of rows')
    rows = []
    for item in instances:
        if isinstance(item, dict):
            data = item.get("data", {}).get("features", {}) if "data" in item else {}
            if data:  # sparse: {"data": {"features": {"keys": [...], "shape": [n], "values": [...]}}}
                row = np.zeros(int(data["shape"][0]), dtype=np.float32)
                row[np.asarray(data["keys"], dtype=np.int64)] = data["values"]
            else:
                row = np.asarray(item.get("features"), dtype=np.float32)
        else:
            row = np.asarray(item, dtype=np.float32)
        rows.append(np.atleast_1d(row))
    return np.vstack(rows)


def answer(
    rows: Sequence[Mapping[str, Any]], accept: str, csv_keys: Sequence[str], json_key: str = "predictions"
) -> tuple[bytes, str]:
    """An answer in the media type ``accept`` asks for (JSON, ``{json_key: [row, ...]}``, by default)."""
    media, _ = _media(accept) if accept and accept != "*/*" else ("application/json", {})
    if media in (recordio.CONTENT_TYPE, "application/x-recordio"):
        return recordio.write_outputs(rows), recordio.CONTENT_TYPE
    plain = [{k: _plain(v) for k, v in row.items()} for row in rows]
    if media in ("application/json", "json"):
        return json.dumps({json_key: plain}).encode(), "application/json"
    if media in ("application/jsonlines", "application/x-jsonlines"):
        return "".join(json.dumps(r) + "\n" for r in plain).encode(), "application/jsonlines"
    if media in ("text/csv", "csv"):
        lines = []
        for r in plain:
            cells: list[str] = []
            for key in csv_keys:
                value = r[key]
                cells.extend(str(v) for v in value) if isinstance(value, list) else cells.append(str(value))
            lines.append(",".join(cells))
        return ("\n".join(lines) + "\n").encode(), "text/csv"
    raise PredictError(
        f"Accept {media} is not supported; use application/json, application/jsonlines, "
        "application/x-recordio-protobuf or text/csv."
    )


def _plain(value: Any) -> Any:
    array = np.asarray(value)
    return array.tolist() if array.ndim else array.item()


def save_model(model_dir: Path, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> Path:
    """``model_algo-1``: an ``.npz`` archive of the model's arrays and its metadata as JSON."""
    model_dir.mkdir(parents=True, exist_ok=True)
    path = model_dir / MODEL_FILE
    with path.open("wb") as f:
        content: dict[str, Any] = {"__meta__": np.frombuffer(json.dumps(dict(meta)).encode(), dtype=np.uint8), **arrays}
        np.savez(f, **content)
    log.info("Saved the model to %s", path)
    return path


def load_model_file(
    model_dir: Path, algorithm: str | None = None, title: str = ""
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``model_algo-1``'s metadata and arrays; with ``algorithm``, one that algorithm (``title``) wrote.

    Raises:
        FileNotFoundError: no model file. ValueError: another algorithm's model.
    """
    model_dir = Path(model_dir)
    path = model_dir / MODEL_FILE
    if not path.exists():
        found = sorted(p.name for p in model_dir.iterdir()) if model_dir.is_dir() else []
        raise FileNotFoundError(f"no {MODEL_FILE} in the model artifact (it holds: {', '.join(found) or 'nothing'})")
    with np.load(path, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    meta = json.loads(arrays.pop("__meta__").tobytes().decode())
    if algorithm is not None and meta.get("algorithm") != algorithm:
        raise ValueError(f"the model artifact is not {title or algorithm} model (it is {meta.get('algorithm')!r})")
    return meta, arrays
