"""Reading a channel into a DMatrix: CSV (label first, no header), libsvm, Parquet; gzip files too.

Errors name the file and line so a person can fix the data: a header row, a non-numeric cell,
rows of different widths.
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)
CSV_TYPES = ("text/csv", "csv", "text/csv; label_size=1", "text/x-csv")
LIBSVM_TYPES = ("text/libsvm", "libsvm", "text/x-libsvm")
PARQUET_TYPES = ("application/x-parquet", "parquet", "application/parquet")


class DataError(ValueError):
    """The channel's data cannot be used; the message names the file (and line) at fault."""


@dataclass(slots=True)
class Table:
    features: np.ndarray
    labels: np.ndarray
    weights: np.ndarray | None
    files: int
    seconds: float


def channel_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.rglob("*") if p.is_file() and not p.name.startswith("."))


def _open_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        return gzip.decompress(raw)
    return raw


def kind_of(content_type: str) -> str:
    base = (content_type or "text/csv").split(";")[0].strip().lower()
    if base in CSV_TYPES or base == "text/csv":
        return "csv"
    if base in LIBSVM_TYPES:
        return "libsvm"
    if base in PARQUET_TYPES:
        return "parquet"
    raise DataError(
        f"Content type '{content_type}' is not supported by the XGBoost algorithm; use text/csv, text/libsvm "
        "or application/x-parquet."
    )


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _locate_csv_error(path: Path, data: bytes) -> DataError:
    """Scan the file to say exactly where it stops being a numeric CSV."""
    width = None
    for lineno, row in enumerate(csv.reader(io.StringIO(data.decode("utf-8", "replace"))), start=1):
        if not row:
            continue
        if lineno == 1 and not any(_is_number(c) for c in row):
            return DataError(
                f"{path.name} line 1 looks like a header row ({','.join(row)[:80]}); the XGBoost algorithm "
                "expects CSV without a header, with the label in the first column."
            )
        for col, cell in enumerate(row, start=1):
            if cell.strip() and not _is_number(cell):
                return DataError(f"{path.name} line {lineno}, column {col}: '{cell[:40]}' is not a number.")
        if width is None:
            width = len(row)
        elif len(row) != width:
            return DataError(f"{path.name} line {lineno} has {len(row)} columns where earlier lines have {width}.")
    return DataError(f"{path.name} could not be read as CSV.")


def _to_matrix(table) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The table as a float32 array of shape (columns, rows): each column is one contiguous write."""
    out = np.empty((table.num_columns, table.num_rows), dtype=np.float32)
    for j, column in enumerate(table.columns):
        out[j] = column.to_numpy(zero_copy_only=False)
    return out


def _read_csv(path: Path) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
        f.seek(0, 2)
        if f.tell() == 0:
            return np.empty((0, 0), dtype=np.float32)
    source = pa.CompressedInputStream(pa.OSFile(str(path)), "gzip") if gzipped else str(path)
    try:
        table = pacsv.read_csv(
            source,
            read_options=pacsv.ReadOptions(autogenerate_column_names=True, block_size=16 << 20),
            convert_options=pacsv.ConvertOptions(strings_can_be_null=True),
        )
    except pa.ArrowInvalid as exc:
        raise _locate_csv_error(path, _open_bytes(path)) from exc
    numeric = all(
        pa.types.is_floating(c.type) or pa.types.is_integer(c.type) or pa.types.is_null(c.type) for c in table.schema
    )
    if not numeric:
        raise _locate_csv_error(path, _open_bytes(path))
    return _to_matrix(table)


def _read_parquet(path: Path) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(_open_bytes(path)))
    except Exception as exc:
        raise DataError(f"{path.name} is not a readable Parquet file: {exc}") from exc
    try:
        return _to_matrix(table)
    except (ValueError, TypeError, pa.ArrowInvalid) as exc:
        raise DataError(f"{path.name}: every Parquet column must be numeric ({exc}).") from exc


def read_table(directory: Path, content_type: str, channel: str, csv_weights: bool = False) -> Table:
    """All files of a channel as one table (label first; with ``csv_weights``, weight second)."""
    started = time.monotonic()
    kind = kind_of(content_type)
    files = channel_files(directory)
    if kind == "libsvm":
        raise DataError("libsvm is read by read_libsvm")
    parts = []
    for path in files:
        part = _read_csv(path) if kind == "csv" else _read_parquet(path)
        if part.size:
            parts.append((path, part))
    if not parts:
        raise DataError(f"Channel '{channel}' has no data: no non-empty file under it.")
    width = parts[0][1].shape[0]
    for path, part in parts:
        if part.shape[0] != width:
            raise DataError(f"{path.name} has {part.shape[0]} columns; {parts[0][0].name} has {width}.")
    columns = np.concatenate([p for _, p in parts], axis=1) if len(parts) > 1 else parts[0][1]
    first_feature = 2 if csv_weights else 1
    if width <= first_feature:
        raise DataError(
            f"Channel '{channel}' has {width} column(s): need a label, "
            f"{'a weight, ' if csv_weights else ''}and at least one feature."
        )
    labels = columns[0]
    if np.isnan(labels).any():
        row = int(np.argmax(np.isnan(labels)))
        raise DataError(f"Channel '{channel}': the label of row {row + 1} is empty.")
    weights = columns[1] if csv_weights else None
    # a (rows, features) view of the column-major block: xgboost reads it without a copy
    return Table(columns[first_feature:].T, labels, weights, len(parts), time.monotonic() - started)


def read_libsvm(directory: Path, channel: str):  # type: ignore[no-untyped-def]
    """A DMatrix from every libsvm file of a channel (xgboost's own parser)."""
    import xgboost as xgb

    files = channel_files(directory)
    if not files:
        raise DataError(f"Channel '{channel}' has no data: no file under it.")
    text = b"".join(_open_bytes(p).rstrip(b"\n") + b"\n" for p in files)
    tmp = directory.parent / f".{channel}.libsvm"
    tmp.write_bytes(text)
    try:
        return xgb.DMatrix(f"{tmp}?format=libsvm"), len(files)
    except xgb.core.XGBoostError as exc:
        raise DataError(f"Channel '{channel}' is not valid libsvm: {str(exc).splitlines()[0]}") from exc
