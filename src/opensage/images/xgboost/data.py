"""Reading a channel into a DMatrix as SageMaker's XGBoost container does (its ``data_utils.py``).

Content types: CSV (label in the first column, no header; with ``csv_weights`` the instance weight in
the second), libsvm (``label[:weight] index:value ...``, zero-based indices), and Parquet (label in
the first column). A channel's files may be nested up to three folders deep and gzip-compressed.
Errors name the file and line so that a person can fix the data: a header row, a non-numeric cell,
rows of different widths, a malformed libsvm token.
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from opensage.images.xgboost.arrow import columns
from opensage.images.xgboost.inflate import gunzip_bounded

log = logging.getLogger(__name__)

CSV = "csv"
LIBSVM = "libsvm"
PARQUET = "parquet"
RECORDIO_PROTOBUF = "recordio-protobuf"
_KINDS = {
    "csv": CSV,
    "text/csv": CSV,
    "libsvm": LIBSVM,
    "text/libsvm": LIBSVM,
    "text/x-libsvm": LIBSVM,
    "parquet": PARQUET,
    "application/x-parquet": PARQUET,
    "recordio-protobuf": RECORDIO_PROTOBUF,
    "application/x-recordio-protobuf": RECORDIO_PROTOBUF,
}
DEFAULT_CONTENT_TYPE = "text/libsvm"  # the container's channel default
MAX_FOLDER_DEPTH = 3
GZIP_MAGIC = b"\x1f\x8b"
_CSV_DELIMITERS = ",;\t| "


class DataError(ValueError):
    """The channel's data cannot be used; the message names the file (and line) at fault."""


@dataclass(frozen=True, slots=True)
class Part:
    """One file of a channel and how many rows it gave, in the order rows were read."""

    path: Path
    shown: str  # how messages name the file: "<channel>/<path in the channel>"
    rows: int
    first_line: int = 1  # the line of the file's first row (blank lines are skipped)


@dataclass(slots=True)
class Channel:
    """A loaded channel: the matrix, its labels, and where each row came from."""

    name: str
    dmatrix: Any
    labels: np.ndarray
    parts: list[Part] = field(default_factory=list)
    size_bytes: int = 0
    seconds: float = 0.0

    def locate(self, row: int) -> str:
        """``file line N`` of a 0-based row index (exact unless a file has blank lines)."""
        for part in self.parts:
            if row < part.rows:
                return f"{part.shown} line {row + part.first_line}"
            row -= part.rows
        return f"row {row + 1}"


@dataclass(slots=True)
class Parsed:
    """A channel's rows before they become a DMatrix."""

    features: Any  # (rows, features): a dense array (possibly a transposed view) or a CSR matrix
    labels: np.ndarray
    weights: np.ndarray | None
    parts: list[Part]


def content_kind(content_type: str | None) -> str:
    """``csv``, ``libsvm``, ``parquet`` or ``recordio-protobuf`` for a channel's ContentType.

    Raises:
        DataError: the content type is not one the algorithm reads.
    """
    text = (content_type or DEFAULT_CONTENT_TYPE).strip().lower()
    base, _, params = text.partition(";")
    kind = _KINDS.get(base.strip())
    if kind is None:
        accepted = ", ".join(sorted(_KINDS))
        raise DataError(f"{content_type} is not an accepted ContentType: {accepted}.")
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if kind == CSV and key.strip() == "label_size" and value.strip() != "1":
            raise DataError(
                f"{content_type} is not an accepted csv ContentType. Optional parameter label_size must be equal to 1"
            )
    return kind


def channel_files(directory: Path, channel: str) -> list[Path]:
    """The data files of a channel, sorted, up to :data:`MAX_FOLDER_DEPTH` folders deep.

    Files whose name starts with ``_`` (``_SUCCESS``) are skipped, as the container skips them.

    Raises:
        DataError: a hidden file (name starting with ``.``) is in the channel, as on SageMaker.
    """
    if not directory.is_dir():
        return []
    files = []
    for path in sorted(directory.rglob("*")):
        if not path.is_file():
            continue
        if path.name.startswith("."):
            raise DataError(
                f"Hidden file found in the data path! Remove that before training: channel '{channel}' has "
                f"{path.relative_to(directory)}."
            )
        if path.name.startswith("_"):
            continue
        if len(path.relative_to(directory).parts) > MAX_FOLDER_DEPTH:
            log.warning(
                "The depth of folder %s exceeds the limit %d; files in deeper folders such as %s are not loaded",
                directory,
                MAX_FOLDER_DEPTH,
                path.relative_to(directory),
            )
            continue
        files.append(path)
    return files


def read_bytes(path: Path) -> bytes:
    """A file's content, gunzipped when it is gzip (by magic number, whatever its name).

    Raises:
        DataError: a gzip file that is not valid gzip data or expands like a gzip bomb (see :mod:`.inflate`).
    """
    raw = path.read_bytes()
    if raw[:2] != GZIP_MAGIC:
        return raw
    try:
        return gunzip_bounded(raw)
    except ValueError as exc:
        raise DataError(f"{path.name}: {exc}") from exc


def load(directory: Path, channel: str, kind: str, *, csv_weights: bool, nthread: int) -> Channel | None:
    """A channel's data as a DMatrix, or ``None`` when the channel has no data.

    Raises:
        DataError: the data is malformed; the message names the file and line.
    """
    if kind in (CSV, LIBSVM):
        import pyarrow.csv  # noqa: F401 - imported before the clock starts: the rate is the data's
    elif kind == PARQUET:
        import pyarrow.parquet  # noqa: F401
    started = time.monotonic()
    files = [p for p in channel_files(directory, channel) if p.stat().st_size > 0]
    if not files:
        return None
    if kind == RECORDIO_PROTOBUF:
        raise DataError(
            f"Channel '{channel}': application/x-recordio-protobuf training data is not supported by OpenSage "
            "yet; use text/csv, text/libsvm or application/x-parquet."
        )
    reader = {CSV: _load_csv, LIBSVM: _load_libsvm, PARQUET: _load_parquet}[kind]
    shown = {path: f"{channel}/{path.relative_to(directory)}" for path in files}
    parsed = reader(shown, channel, csv_weights=csv_weights)
    if parsed is None:
        return None
    seconds = time.monotonic() - started
    size = sum(p.stat().st_size for p in files)
    loaded = Channel(channel, _dmatrix(parsed, nthread), parsed.labels, parsed.parts, size, seconds)
    _log_loaded(loaded, kind)
    return loaded


def _log_loaded(loaded: Channel, kind: str) -> None:
    speed = loaded.size_bytes / loaded.seconds if loaded.seconds > 0 else 0.0
    names = ", ".join(p.shown for p in loaded.parts[:5]) + (" ..." if len(loaded.parts) > 5 else "")
    log.info(
        "Loaded channel '%s' (%s): %d rows, %d columns from %d file(s) [%s], %s in %.2f s (%s/s)",
        loaded.name,
        kind,
        loaded.dmatrix.num_row(),
        loaded.dmatrix.num_col(),
        len(loaded.parts),
        names,
        human_size(loaded.size_bytes),
        loaded.seconds,
        human_size(speed),
    )


def human_size(n: float) -> str:
    """``12.3 MiB`` style."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _dmatrix(parsed: Parsed, nthread: int) -> Any:
    import xgboost as xgb  # only once the data parsed: bad data fails fast

    return xgb.DMatrix(parsed.features, label=parsed.labels, weight=parsed.weights, nthread=nthread)


# --- CSV -------------------------------------------------------------------------------------------


def csv_delimiter(first_line: str) -> str:
    """The delimiter of a CSV line, as the container finds it (``csv.Sniffer``), defaulting to a comma."""
    try:
        delimiter = csv.Sniffer().sniff(first_line).delimiter
    except csv.Error:
        return ","
    return delimiter if delimiter in _CSV_DELIMITERS else ","


def _first_line(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(2)
    opener = gzip.open if head == GZIP_MAGIC else open
    with opener(path, "rb") as f:  # type: ignore[operator]
        return f.readline(1 << 16).decode("utf-8", "replace").strip()


def _load_csv(files: dict[Path, str], channel: str, *, csv_weights: bool) -> Parsed | None:
    delimiter = csv_delimiter(_first_line(next(iter(files))))
    log.info("Determined delimiter of CSV input is '%s'", delimiter)
    blocks = []
    parts = []
    for path in files:
        block = _read_csv_file(path, files[path], delimiter)
        if block.shape[1]:
            blocks.append(block)
            parts.append(Part(path, files[path], block.shape[1]))
    if not blocks:
        return None
    return _table(channel, blocks, parts, csv_weights=csv_weights)


def _read_csv_file(path: Path, shown: str, delimiter: str) -> np.ndarray:
    """One file as a float32 array of shape (columns, rows)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    with open(path, "rb") as f:
        gzipped = f.read(2) == GZIP_MAGIC
    source: Any = pa.CompressedInputStream(pa.OSFile(str(path)), "gzip") if gzipped else str(path)
    try:
        table = pacsv.read_csv(
            source,
            read_options=pacsv.ReadOptions(autogenerate_column_names=True, block_size=16 << 20),
            parse_options=pacsv.ParseOptions(delimiter=delimiter),
            convert_options=pacsv.ConvertOptions(strings_can_be_null=True),
        )
    except pa.ArrowInvalid as exc:
        raise locate_csv_error(shown, read_bytes(path), delimiter) from exc
    numeric = all(pa.types.is_floating(t) or pa.types.is_integer(t) or pa.types.is_null(t) for t in table.schema.types)
    if not numeric:
        raise locate_csv_error(shown, read_bytes(path), delimiter)
    return columns(table)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def locate_csv_error(shown: str, data: bytes, delimiter: str = ",") -> DataError:
    """Scan a file that failed to parse and say where it stops being a numeric CSV."""
    width = None
    rows = csv.reader(io.StringIO(data.decode("utf-8", "replace")), delimiter=delimiter)
    for lineno, row in enumerate(rows, start=1):
        if not row:
            continue
        if lineno == 1 and not any(_is_number(c) for c in row):
            return DataError(
                f"{shown} line 1 looks like a header row ({delimiter.join(row)[:80]}); the XGBoost algorithm "
                "expects CSV without a header, with the label in the first column."
            )
        for col, cell in enumerate(row, start=1):
            if cell.strip() and not _is_number(cell):
                return DataError(f"{shown} line {lineno}, column {col}: '{cell[:40]}' is not a number.")
        if width is None:
            width = len(row)
        elif len(row) != width:
            return DataError(f"{shown} line {lineno} has {len(row)} columns where earlier lines have {width}.")
    return DataError(f"{shown} could not be read as CSV with delimiter '{delimiter}'.")


def _table(channel: str, blocks: list[np.ndarray], parts: list[Part], *, csv_weights: bool) -> Parsed:
    width = blocks[0].shape[0]
    for block, part in zip(blocks, parts, strict=True):
        if block.shape[0] != width:
            raise DataError(f"{part.shown} has {block.shape[0]} columns; {parts[0].shown} has {width}.")
    first_feature = 2 if csv_weights else 1
    if width <= first_feature:
        raise DataError(
            f"Channel '{channel}' has {width} column(s): it needs a label, "
            f"{'a weight (csv_weights=1), ' if csv_weights else ''}and at least one feature."
        )
    columns = np.concatenate(blocks, axis=1) if len(blocks) > 1 else blocks[0]
    labels = columns[0]
    if np.isnan(labels).any():
        where = Channel(channel, None, labels, parts).locate(int(np.argmax(np.isnan(labels))))
        raise DataError(f"{where}: the label (first column) is empty.")
    weights = columns[1] if csv_weights else None
    # a (rows, features) view of the column-major block: xgboost reads it without a copy
    return Parsed(columns[first_feature:].T, labels, weights, parts)


# --- Parquet ---------------------------------------------------------------------------------------


def _load_parquet(files: dict[Path, str], channel: str, *, csv_weights: bool) -> Parsed | None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    blocks, parts = [], []
    for path in files:
        try:
            table = pq.read_table(io.BytesIO(read_bytes(path)))
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"{files[path]} is not a readable Parquet file: {exc}") from exc
        bad = [f.name for f in table.schema if not (pa.types.is_floating(f.type) or pa.types.is_integer(f.type))]
        if bad and not all(pa.types.is_boolean(table.schema.field(n).type) for n in bad):
            raise DataError(f"{files[path]}: every Parquet column must be numeric; column '{bad[0]}' is not.")
        if table.num_rows:
            blocks.append(columns(table))
            parts.append(Part(path, files[path], table.num_rows))
    if not blocks:
        return None
    return _table(channel, blocks, parts, csv_weights=False)


# --- libsvm ----------------------------------------------------------------------------------------

_NUMBER = rb"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf|NaN|Inf)"
_LIBSVM_LINE = re.compile(rb"\s*(?:" + _NUMBER + rb")(?::(?:" + _NUMBER + rb"))?(?:\s+\d+:(?:" + _NUMBER + rb"))*\s*")


def _libsvm_lines(data: bytes) -> Iterator[tuple[int, bytes]]:
    for lineno, line in enumerate(data.split(b"\n"), start=1):
        if line.strip():
            yield lineno, line


def locate_libsvm_error(shown: str, data: bytes) -> DataError | None:
    """The first line of a libsvm file that is not ``label[:weight] index:value ...``, if any."""
    for lineno, line in _libsvm_lines(data):
        if not _LIBSVM_LINE.fullmatch(line):
            snippet = line.decode("utf-8", "replace").strip()[:50]
            return DataError(
                f"{shown} line {lineno} '{snippet}' is not libsvm: expected <label>[:<weight>] "
                "<index>:<value> ... with integer indices."
            )
    return None


_MARK = 1e308  # stands for each end of line in the stream of numbers
_MARK_TEXT = b"\n1e308\n"


def _numbers(text: bytes) -> np.ndarray | None:
    """Every number of libsvm text, one end-of-line marker after each line; ``None`` if one is not a number."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    one_per_line = text.replace(b"\n", _MARK_TEXT).replace(b":", b"\n").replace(b" ", b"\n").replace(b"\t", b"\n")
    try:
        table = pacsv.read_csv(
            pa.py_buffer(one_per_line),
            read_options=pacsv.ReadOptions(column_names=["v"], block_size=16 << 20),
            parse_options=pacsv.ParseOptions(delimiter=","),
            convert_options=pacsv.ConvertOptions(column_types={"v": pa.float64()}),
        )
    except pa.ArrowInvalid:
        return None
    return table.column(0).to_numpy()


@dataclass(frozen=True, slots=True)
class Sparse:
    """Rows of libsvm text in CSR form."""

    labels: np.ndarray
    weights: np.ndarray | None
    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray

    @property
    def rows(self) -> int:
        return len(self.labels)

    @property
    def width(self) -> int:
        return int(self.indices.max()) + 1 if self.indices.size else 0


def parse_libsvm(data: bytes) -> Sparse | None:
    """The rows of libsvm text, or ``None`` if it is malformed.

    Vectorised: every number is parsed in one pass (pyarrow), lines are told apart by a marker, and a
    line's shape is checked by its count of numbers against its count of colons (``label[:weight]``
    then ``index:value`` pairs: an odd count has no weight).
    """
    text = data.replace(b"\r", b" ")
    if not text.endswith(b"\n"):
        text += b"\n"
    raw = np.frombuffer(text, dtype=np.uint8)
    line_ends = np.flatnonzero(raw == ord("\n"))
    colons = np.diff(np.searchsorted(np.flatnonzero(raw == ord(":")), line_ends), prepend=0)
    numbers = _numbers(text)
    if numbers is None:
        return None
    marks = np.flatnonzero(numbers == _MARK)
    if len(marks) != len(line_ends):
        return None
    starts = np.concatenate(([0], marks[:-1] + 1))  # each line's first number
    counts = marks - starts
    rows = counts > 0  # blank lines have no number
    counts, colons, starts = counts[rows], colons[rows], starts[rows]
    has_weight = counts % 2 == 0
    if not np.array_equal(colons, np.where(has_weight, counts // 2, (counts - 1) // 2)):
        return None
    pairs = (counts - 1 - has_weight) // 2
    indptr = np.concatenate(([0], np.cumsum(pairs)))
    offsets = np.repeat(starts + 1 + has_weight - 2 * indptr[:-1], pairs) + 2 * np.arange(indptr[-1])
    indices = numbers[offsets]
    if indices.size and (indices.min() < 0 or not np.array_equal(indices, np.floor(indices))):
        return None
    weights = np.where(has_weight, numbers[np.minimum(starts + 1, len(numbers) - 1)], 1.0) if has_weight.any() else None
    return Sparse(
        numbers[starts].astype(np.float32),
        None if weights is None else weights.astype(np.float32),
        indptr,
        indices.astype(np.int64),
        numbers[offsets + 1].astype(np.float32),
    )


def _first_row_line(data: bytes) -> int:
    """The line number of the first non-blank line."""
    return data[: len(data) - len(data.lstrip())].count(b"\n") + 1


def _load_libsvm(files: dict[Path, str], channel: str, *, csv_weights: bool) -> Parsed | None:
    import scipy.sparse as sp

    chunks: list[Sparse] = []
    parts = []
    for path in files:
        data = read_bytes(path)
        parsed = parse_libsvm(data)
        if parsed is None:
            raise locate_libsvm_error(files[path], data) or DataError(f"{files[path]} is not libsvm text.")
        if parsed.rows:
            chunks.append(parsed)
            parts.append(Part(path, files[path], parsed.rows, _first_row_line(data)))
    if not chunks:
        return None
    width = max(c.width for c in chunks)
    matrices = [sp.csr_matrix((c.values, c.indices, c.indptr), shape=(c.rows, width)) for c in chunks]
    labels = np.concatenate([c.labels for c in chunks])
    weights = None
    if any(c.weights is not None for c in chunks):
        weights = np.concatenate([c.weights if c.weights is not None else np.ones(c.rows, np.float32) for c in chunks])
    features = sp.vstack(matrices, format="csr") if len(matrices) > 1 else matrices[0]
    return Parsed(features, labels, weights, parts)
