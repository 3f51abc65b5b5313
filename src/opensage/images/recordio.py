"""RecordIO-wrapped protobuf, the data format of SageMaker's first-party algorithms.

A file (or a request body) is a sequence of RecordIO frames: a little-endian ``uint32`` magic
``0xCED7230A``, a ``uint32`` whose low 29 bits are the payload's length (the top 3 bits flag a
record split over several frames: 1 first, 2 middle, 3 last), the payload, and zero padding to a
multiple of 4 bytes. Each payload is one ``aialgs.data.Record`` protobuf message: ``features`` and
``label`` maps from a name (``"values"`` for vectors) to a ``Value`` holding a ``Float32Tensor``,
``Float64Tensor`` or ``Int32Tensor`` (``values``; for a sparse tensor also ``keys`` and ``shape``).

The message classes are built here from a descriptor equal to the SDK's ``record.proto``, so the
bytes are exactly those ``sagemaker.amazon.common.write_numpy_to_dense_tensor`` writes and
``read_records`` reads. Inference answers put named outputs in ``label`` (``score``,
``predicted_label``, ``closest_cluster``, ``projection``...), one record per input row.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping, Sequence
from functools import cache
from typing import Any

import numpy as np

MAGIC = 0xCED7230A
CONTENT_TYPE = "application/x-recordio-protobuf"
_HEADER = struct.Struct("<II")
_LENGTH_MASK = (1 << 29) - 1
_TENSORS = {"float32_tensor": np.float32, "float64_tensor": np.float64, "int32_tensor": np.int32}


class RecordIOError(ValueError):
    """The bytes are not RecordIO-protobuf; the message says where and why."""


# --- the Record message ---------------------------------------------------------------------------


@cache
def record_class() -> Any:
    """The ``aialgs.data.Record`` message class (built once from its descriptor)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    f = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(name="opensage_record.proto", package="aialgs.data", syntax="proto2")

    def message(name: str, fields: Sequence[tuple[str, int, int, int, str]]) -> Any:
        m = proto.message_type.add(name=name)
        for fname, number, ftype, label, type_name in fields:
            field = m.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                field.type_name = type_name
            if label == f.LABEL_REPEATED and ftype not in (f.TYPE_MESSAGE, f.TYPE_BYTES, f.TYPE_STRING):
                field.options.packed = True
        return m

    rep, opt = f.LABEL_REPEATED, f.LABEL_OPTIONAL
    for name, vtype in (
        ("Float32Tensor", f.TYPE_FLOAT),
        ("Float64Tensor", f.TYPE_DOUBLE),
        ("Int32Tensor", f.TYPE_INT32),
    ):
        message(
            name,
            [("values", 1, vtype, rep, ""), ("keys", 2, f.TYPE_UINT64, rep, ""), ("shape", 3, f.TYPE_UINT64, rep, "")],
        )
    message("Bytes", [("value", 1, f.TYPE_BYTES, rep, ""), ("content_type", 2, f.TYPE_STRING, opt, "")])
    value = message(
        "Value",
        [
            ("float32_tensor", 2, f.TYPE_MESSAGE, opt, ".aialgs.data.Float32Tensor"),
            ("float64_tensor", 3, f.TYPE_MESSAGE, opt, ".aialgs.data.Float64Tensor"),
            ("int32_tensor", 7, f.TYPE_MESSAGE, opt, ".aialgs.data.Int32Tensor"),
            ("bytes", 9, f.TYPE_MESSAGE, opt, ".aialgs.data.Bytes"),
        ],
    )
    value.oneof_decl.add(name="value")
    for field in value.field:
        field.oneof_index = 0
    record = proto.message_type.add(name="Record")
    for map_name, number in (("features", 1), ("label", 2)):
        entry_name = f"{map_name.capitalize()}Entry"
        entry = record.nested_type.add(name=entry_name)
        entry.options.map_entry = True
        entry.field.add(name="key", number=1, type=f.TYPE_STRING, label=opt)
        entry.field.add(name="value", number=2, type=f.TYPE_MESSAGE, label=opt, type_name=".aialgs.data.Value")
        record.field.add(
            name=map_name, number=number, type=f.TYPE_MESSAGE, label=rep, type_name=f".aialgs.data.Record.{entry_name}"
        )
    for fname, number in (("uid", 3), ("metadata", 4), ("configuration", 5)):
        record.field.add(name=fname, number=number, type=f.TYPE_STRING, label=opt)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("aialgs.data.Record"))


# --- RecordIO frames ------------------------------------------------------------------------------


def frame(payload: bytes) -> bytes:
    """One RecordIO frame holding ``payload``."""
    pad = -len(payload) % 4
    return _HEADER.pack(MAGIC, len(payload)) + payload + b"\0" * pad


def frames(data: bytes | memoryview) -> Iterator[bytes]:
    """The payloads of the RecordIO frames in ``data`` (split records joined).

    Raises:
        RecordIOError: a bad magic number or a frame that runs past the end, with its offset.
    """
    view = memoryview(data)
    offset, size, parts = 0, len(view), []
    while offset < size:
        if size - offset < 8:
            raise RecordIOError(f"truncated RecordIO header at byte {offset}: {size - offset} bytes left, 8 needed")
        magic, word = _HEADER.unpack_from(view, offset)
        if magic != MAGIC:
            raise RecordIOError(
                f"not RecordIO at byte {offset}: magic number {magic:#010x}, expected {MAGIC:#010x} "
                "(is the data application/x-recordio-protobuf?)"
            )
        length, cflag = word & _LENGTH_MASK, word >> 29
        start = offset + 8
        if start + length > size:
            raise RecordIOError(
                f"truncated RecordIO record at byte {offset}: {length} bytes announced, {size - start} left"
            )
        payload = bytes(view[start : start + length])
        offset = start + length + (-length % 4)
        if cflag == 0:
            yield payload
        elif cflag in (1, 2):
            parts.append(payload)
        else:
            parts.append(payload)
            yield b"".join(parts)
            parts = []
    if parts:
        raise RecordIOError("the data ends inside a record split over several RecordIO frames")


# --- decoding -------------------------------------------------------------------------------------


def _tensor(value: Any, where: str) -> tuple[np.ndarray, np.ndarray | None, tuple[int, ...]]:
    kind = value.WhichOneof("value")
    if kind not in _TENSORS:
        raise RecordIOError(f"{where} holds {kind or 'nothing'}, not a Float32, Float64 or Int32 tensor")
    tensor = getattr(value, kind)
    values = np.asarray(tensor.values, dtype=_TENSORS[kind])
    shape = tuple(int(s) for s in tensor.shape)
    keys = np.asarray(tensor.keys, dtype=np.int64) if len(tensor.keys) or shape else None
    return values, keys, shape


def parse_records(data: bytes | memoryview) -> list[Any]:
    """The ``Record`` messages of a RecordIO-protobuf body."""
    cls = record_class()
    records = []
    for index, payload in enumerate(frames(data)):
        record = cls()
        try:
            record.ParseFromString(payload)
        except Exception as exc:  # protobuf's DecodeError
            raise RecordIOError(f"record {index} is not an aialgs.data.Record protobuf message: {exc}") from exc
        records.append(record)
    return records


def _vectors(
    records: Sequence[Any], feature_dim: int | None, where: str
) -> Iterator[tuple[int, np.ndarray, np.ndarray | None, int]]:
    """Each record's ``(index, values, keys or None, width)``, widths checked against the first."""
    width = feature_dim
    for i, record in enumerate(records):
        if "values" not in record.features:
            raise RecordIOError(f"{where}: record {i} has no 'values' feature (features: {sorted(record.features)})")
        values, keys, shape = _tensor(record.features["values"], f"{where}: record {i}'s features")
        n = values.size
        if keys is not None:
            n = shape[-1] if shape else width  # type: ignore[assignment]
            if n is None:
                raise RecordIOError(f"{where}: record {i} is a sparse vector without a shape; give feature_dim")
            if keys.size and int(keys.max()) >= n:
                raise RecordIOError(f"{where}: record {i} has key {int(keys.max())} outside its dimension {n}")
        if width is None:
            width = n
        elif n != width:
            raise RecordIOError(f"{where}: record {i} has {n} features where {width} were expected")
        yield i, values.astype(np.float32, copy=False), keys, width


def _labels(records: Sequence[Any], where: str) -> np.ndarray | None:
    """The records' scalar ``label["values"]``, or None when no record has one."""
    labels: list[float] = []
    for i, record in enumerate(records):
        if "values" in record.label:
            lv, _, _ = _tensor(record.label["values"], f"{where}: record {i}'s label")
            if lv.size != 1:
                raise RecordIOError(f"{where}: record {i}'s label has {lv.size} values; one is expected")
            labels.append(float(lv[0]))
        elif labels:
            raise RecordIOError(f"{where}: record {i} has no label while earlier records have one")
    if labels and len(labels) != len(records):
        raise RecordIOError(
            f"{where}: the first {len(records) - len(labels)} records have no label while later ones do"
        )
    return np.asarray(labels, dtype=np.float32) if labels else None


def to_matrix(
    records: Sequence[Any], *, feature_dim: int | None = None, where: str = "data"
) -> tuple[np.ndarray, np.ndarray | None]:
    """``(features, labels)`` of records whose ``values`` feature is a dense or sparse vector.

    Features become a float32 matrix (a sparse vector is expanded to its ``shape``, or to
    ``feature_dim``); labels the records' scalar ``label["values"]``, or ``None`` when no record has one.

    Raises:
        RecordIOError: a record without ``values``, vectors of different lengths, or some records
            labelled and others not, naming the first offending record.
    """
    rows: list[np.ndarray] = []
    width = feature_dim
    for _, values, keys, width in _vectors(records, feature_dim, where):
        if keys is not None:
            dense = np.zeros(width, dtype=np.float32)
            dense[keys] = values
            values = dense
        rows.append(values)
    labels = _labels(records, where)
    matrix = np.vstack(rows) if rows else np.zeros((0, width or 0), dtype=np.float32)
    return matrix, labels


def to_sparse(records: Sequence[Any], *, feature_dim: int, where: str = "data") -> tuple[Any, np.ndarray | None]:
    """``(features, labels)`` as :func:`to_matrix` gives them, the features a SciPy CSR matrix.

    A sparse record keeps only its keys, so ``feature_dim`` may be in the millions.
    """
    from scipy import sparse

    indptr, indices, data = [0], [], []
    for _, values, keys, width in _vectors(records, feature_dim, where):
        cols = keys if keys is not None else np.arange(width)
        indices.append(cols.astype(np.int64))
        data.append(values)
        indptr.append(indptr[-1] + len(cols))
    matrix = sparse.csr_matrix(
        (
            np.concatenate(data) if data else np.zeros(0, dtype=np.float32),
            np.concatenate(indices) if indices else np.zeros(0, dtype=np.int64),
            np.asarray(indptr, dtype=np.int64),
        ),
        shape=(len(indptr) - 1, feature_dim),
    )
    return matrix, _labels(records, where)


def read_matrix(data: bytes | memoryview, **kwargs: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """``(features, labels)`` of a RecordIO-protobuf body (see :func:`to_matrix`)."""
    return to_matrix(parse_records(data), **kwargs)


# --- encoding -------------------------------------------------------------------------------------


def _fill(value: Any, array: np.ndarray) -> None:
    if array.dtype == np.float64:
        value.float64_tensor.values.extend(array.tolist())
    elif np.issubdtype(array.dtype, np.integer):
        value.int32_tensor.values.extend(array.astype(np.int32).tolist())
    else:
        value.float32_tensor.values.extend(array.astype(np.float32).tolist())


def write_matrix(features: np.ndarray, labels: np.ndarray | None = None) -> bytes:
    """RecordIO-protobuf of a 2-D array, one dense record per row (as the SDK's ``record_set`` writes)."""
    features = np.asarray(features)
    if features.ndim != 2:
        raise ValueError(f"features must be a 2-D array, not {features.ndim}-D")
    if labels is not None and len(labels) != len(features):
        raise ValueError(f"{len(labels)} labels for {len(features)} rows")
    cls = record_class()
    out = []
    for i, row in enumerate(features):
        record = cls()
        _fill(record.features["values"], row)
        if labels is not None:
            _fill(record.label["values"], np.asarray([labels[i]]))
        out.append(frame(record.SerializeToString()))
    return b"".join(out)


def write_outputs(rows: Sequence[Mapping[str, Any]]) -> bytes:
    """RecordIO-protobuf of inference answers: one record per row, each output a float32 ``label`` tensor."""
    cls = record_class()
    out = []
    for row in rows:
        record = cls()
        for name, value in row.items():
            record.label[name].float32_tensor.values.extend(np.atleast_1d(np.asarray(value, dtype=np.float32)).tolist())
        out.append(frame(record.SerializeToString()))
    return b"".join(out)


def read_outputs(data: bytes) -> list[dict[str, list[float]]]:
    """The named outputs of each record of an answer (the inverse of :func:`write_outputs`)."""
    result = []
    for record in parse_records(data):
        row = {}
        for name in record.label:
            values, _, _ = _tensor(record.label[name], f"output {name}")
            row[name] = values.tolist()
        result.append(row)
    return result
