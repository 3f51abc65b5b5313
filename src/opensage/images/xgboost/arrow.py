"""Arrow tables as numpy arrays, read from the Arrow buffers themselves.

pyarrow's ``to_numpy`` imports pandas (about 0.1 s and 40 MB per job) to do what numpy does as
well; the built-in XGBoost reads every CSV and Parquet channel through :func:`columns`.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def columns(table: Any) -> np.ndarray:
    """The table as float32 (columns, rows), nulls as NaN: each chunk is one contiguous write.

    Read from the Arrow buffers directly: pyarrow's ``to_numpy`` imports pandas (about 0.1 s and
    40 MB per job) to convert what numpy does as well.
    """
    out = np.empty((table.num_columns, table.num_rows), dtype=np.float32)
    for j, column in enumerate(table.columns):
        row = 0
        for chunk in column.chunks:
            out[j, row : row + len(chunk)] = _chunk_values(chunk)
            row += len(chunk)
    return out


def _chunk_values(chunk: Any) -> np.ndarray:
    """One numeric (or all-null) Arrow array as a numpy array; with nulls, float64 with NaN there."""
    import pyarrow as pa

    n, offset, kind = len(chunk), chunk.offset, chunk.type
    if pa.types.is_null(kind):
        return np.full(n, np.nan)
    bits = kind.bit_width
    if pa.types.is_floating(kind):
        dtype = np.dtype({16: np.float16, 32: np.float32, 64: np.float64}[bits])
    else:
        dtype = np.dtype(f"{'i' if pa.types.is_signed_integer(kind) else 'u'}{bits // 8}")
    validity, data = chunk.buffers()[:2]
    values = np.frombuffer(data, dtype=dtype, count=offset + n)[offset:]
    if not chunk.null_count:
        return values
    valid = np.unpackbits(np.frombuffer(validity, dtype=np.uint8), bitorder="little")[offset : offset + n]
    return np.where(valid.astype(bool), values.astype(np.float64), np.nan)
