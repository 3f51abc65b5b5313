"""What the analyzer reads: a baseline dataset (CSV with or without header, JSON Lines, Parquet) or the
captured records of an endpoint in a time window, as one Arrow table of named columns.

Columns of a CSV without header are named ``_c0``, ``_c1``... as SageMaker's analyzer names them. A
capture record's ``endpointInput`` (and ``endpointOutput``) data is CSV, JSON or BASE64 text, one or
more rows per request; captured columns take the baseline's names by position (the output's columns
first when the baseline has them too, as ``output_columns_position`` START says).
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv


class DatasetError(Exception):
    """The dataset cannot be read; the message says what to fix."""


def parse_format(text: str | None) -> dict[str, Any]:
    """The ``dataset_format`` variable (JSON), e.g. ``{"csv": {"header": true}}``."""
    if not text:
        raise DatasetError(
            'The dataset_format environment variable is not set; set it to e.g. {"csv": {"header": true}}.'
        )
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"dataset_format is not JSON ({exc}): {text[:200]}") from exc
    if not isinstance(value, dict) or not value:
        raise DatasetError(f"dataset_format must be an object such as {{'csv': {{'header': true}}}}: {text[:200]}")
    return value


def _files(source: Path, suffixes: Sequence[str] = ()) -> list[Path]:
    if source.is_file():
        return [source]
    found = sorted(p for p in source.rglob("*") if p.is_file() and not p.name.startswith("."))
    return [p for p in found if not suffixes or p.suffix.lower() in suffixes]


def read_csv(data: Path | bytes, header: bool) -> pa.Table:
    """A CSV file (or text) as a table; empty fields are missing values."""
    options = pacsv.ReadOptions(autogenerate_column_names=not header, block_size=1 << 24)
    convert = pacsv.ConvertOptions(strings_can_be_null=True)
    try:
        table = pacsv.read_csv(
            io.BytesIO(data) if isinstance(data, bytes) else data, read_options=options, convert_options=convert
        )
    except (pa.ArrowInvalid, OSError) as exc:
        where = "the captured CSV data" if isinstance(data, bytes) else str(data)
        raise DatasetError(f"{where} is not CSV the analyzer can read: {exc}") from exc
    if not header:
        table = table.rename_columns([f"_c{i}" for i in range(table.num_columns)])
    return table


def _concat(tables: list[pa.Table]) -> pa.Table:
    if len(tables) == 1:
        return tables[0]
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise DatasetError(f"the dataset's files do not have the same columns: {exc}") from exc


def read_baseline(source: Path, fmt: dict[str, Any]) -> pa.Table:
    """The baseline dataset at ``source`` (a file or a directory of them) in ``fmt``.

    Raises:
        DatasetError: nothing there, an unknown format, or data that does not parse.
    """
    files = _files(source)
    if not files:
        raise DatasetError(f"The baseline dataset at {source} has no files; check the baseline_dataset S3 URI.")
    if "csv" in fmt:
        header = bool((fmt.get("csv") or {}).get("header", True))
        return _concat([read_csv(f, header) for f in files])
    if "json" in fmt:
        rows = []
        for path in files:
            rows.extend(_json_rows(path.read_bytes(), str(path), bool((fmt.get("json") or {}).get("lines", True))))
        return _table_of_records(rows, str(source))
    if "parquet" in fmt:
        import pyarrow.parquet as pq

        return _concat([pq.read_table(f) for f in files])
    raise DatasetError(f"dataset_format {json.dumps(fmt)} is not csv, json or parquet.")


def _json_rows(data: bytes, where: str, lines: bool) -> list[Any]:
    try:
        if lines:
            return [json.loads(line) for line in data.splitlines() if line.strip()]
        value = json.loads(data)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{where} is not JSON{' Lines' if lines else ''}: {exc}") from exc
    return value if isinstance(value, list) else [value]


def _flatten(record: Any) -> dict[str, Any]:
    if isinstance(record, dict):
        for key in ("instances", "features"):  # {"instances": [...]} as SageMaker's JSON requests carry them
            if (
                len(record) == 1
                and isinstance(record.get(key), list)
                and record[key]
                and not isinstance(record[key][0], (dict, list))
            ):
                return {f"_c{i}": v for i, v in enumerate(record[key])}
        return {str(k): v for k, v in record.items()}
    if isinstance(record, list):
        return {f"_c{i}": v for i, v in enumerate(record)}
    return {"_c0": record}


def _table_of_records(rows: Iterable[Any], where: str) -> pa.Table:
    records = [_flatten(r) for r in rows]
    names: dict[str, None] = {}
    for record in records:
        names.update(dict.fromkeys(record))
    columns = {}
    for name in names:
        values = [r.get(name) for r in records]
        try:
            columns[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed types: the analyzer sees text
            columns[name] = pa.array([None if v is None else str(v) for v in values], pa.string())
    if not columns:
        raise DatasetError(f"{where} has no records.")
    return pa.table(columns)


@dataclass(slots=True)
class Captured:
    """The records of a window: the input (and output) rows as tables, and what was read."""

    inputs: pa.Table | None
    outputs: pa.Table | None
    records: int
    files: int
    skipped: list[str] = field(default_factory=list)


def _decode(part: dict[str, Any]) -> tuple[str, bytes]:
    """(``csv`` | ``json``, data) of one capture record's endpointInput or endpointOutput."""
    encoding = str(part.get("encoding", "CSV")).upper()
    data = part.get("data", "")
    raw = base64.b64decode(data) if encoding == "BASE64" else str(data).encode()
    content_type = str(part.get("observedContentType", "")).lower()
    if encoding == "JSON" or (encoding == "BASE64" and "json" in content_type):
        return "json", raw
    return "csv", raw


def _inference_time(record: dict[str, Any]) -> dt.datetime | None:
    text = (record.get("eventMetadata") or {}).get("inferenceTime")
    if not text:
        return None
    try:
        return dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None


def read_capture(source: Path, start: dt.datetime | None, end: dt.datetime | None) -> Captured:
    """The capture records under ``source`` whose inferenceTime is in ``[start, end)``.

    Raises:
        DatasetError: a captured payload does not parse.
    """
    files = _files(source, (".jsonl",))
    kinds: dict[str, list[tuple[str, bytes]]] = {"endpointInput": [], "endpointOutput": []}
    records = 0
    skipped: list[str] = []
    for path in files:
        for number, line in enumerate(path.read_bytes().splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                skipped.append(f"{path.name}:{number}")
                continue
            moment = _inference_time(record)
            if moment is not None and ((start and moment < start) or (end and moment >= end)):
                continue
            data = record.get("captureData") or {}
            records += 1
            for name, parts in kinds.items():
                if name in data:
                    parts.append(_decode(data[name]))
    return Captured(_rows(kinds["endpointInput"]), _rows(kinds["endpointOutput"]), records, len(files), skipped)


def _rows(parts: list[tuple[str, bytes]]) -> pa.Table | None:
    if not parts:
        return None
    csv = [data.strip() for kind, data in parts if kind == "csv" and data.strip()]
    jsons = [data for kind, data in parts if kind == "json"]
    if csv and not jsons:
        return read_csv(b"\n".join(csv) + b"\n", header=False)
    rows: list[Any] = []
    for data in jsons:
        value = _json_rows(data, "a captured JSON payload", lines=False)
        rows.extend(value if value and isinstance(value[0], (dict, list)) else [value])
    for data in csv:
        rows.extend(line.decode().split(",") for line in data.splitlines())
    return _table_of_records(rows, "the captured data")


def align(captured: Captured, names: Sequence[str] | None) -> pa.Table:
    """The window's table, its columns named after the baseline's (``names``) by position.

    With the output captured and a baseline of as many columns as output and input together, the
    output's columns come first; otherwise the input's alone are analyzed.
    """
    inputs, outputs = captured.inputs, captured.outputs
    if inputs is None and outputs is None:
        raise DatasetError("the captured records carry neither endpointInput nor endpointOutput data.")
    table = inputs if inputs is not None else outputs
    assert table is not None
    if (
        names
        and inputs is not None
        and outputs is not None
        and len(names) == inputs.num_columns + outputs.num_columns
        and inputs.num_rows == outputs.num_rows
    ):
        columns = [*outputs.columns, *inputs.columns]
        table = pa.table(columns, names=[f"_c{i}" for i in range(len(columns))])
    if names and all(n.startswith("_c") for n in table.column_names):
        count = min(len(names), table.num_columns)
        renamed = list(names[:count]) + table.column_names[count:]
        if len(set(renamed)) == len(renamed):
            table = table.rename_columns(renamed)
    return table
