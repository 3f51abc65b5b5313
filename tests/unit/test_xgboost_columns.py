"""The built-in XGBoost's Arrow-to-numpy conversion gives what pyarrow's own ``to_numpy`` gives."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from opensage.images.xgboost.arrow import columns as _columns


def _reference(table: pa.Table) -> np.ndarray:
    out = np.empty((table.num_columns, table.num_rows), dtype=np.float32)
    for j, column in enumerate(table.columns):
        out[j] = column.to_numpy(zero_copy_only=False)
    return out


def test_chunks_offsets_nulls_and_types_convert_as_pyarrow_does() -> None:
    ints = pa.array([*range(10), None, 2**60 + 1])
    table = pa.table(
        {
            "int_nulls": pa.chunked_array([pa.array([1, None, 3]), pa.array(list(range(4, 13)))]),
            "double_nulls": pa.chunked_array([pa.array([1.5, None, 2.0, 3.0] * 3)]),
            "all_null": pa.chunked_array([pa.array([None] * 12, type=pa.null())]),
            "sliced": pa.chunked_array([ints.slice(0, 5), ints.slice(5)]),
            "float32": pa.chunked_array([pa.array(np.arange(12, dtype=np.float32))]),
            "uint16": pa.chunked_array([pa.array(np.arange(12, dtype=np.uint16))]),
            "negative": pa.chunked_array([pa.array(-np.arange(12, dtype=np.int8))]),
        }
    )
    assert np.array_equal(_columns(table), _reference(table), equal_nan=True)
