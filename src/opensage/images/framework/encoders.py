"""The inference toolkit's default decoders and encoders: JSON, CSV and NPY <-> NumPy arrays."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np

JSON, CSV, NPY = "application/json", "text/csv", "application/x-npy"
SUPPORTED = (JSON, CSV, NPY)


class UnsupportedFormatError(ValueError):
    """A content type (or accept type) the default handlers do not know."""

    def __init__(self, content_type: str) -> None:
        super().__init__(
            f"Content type {content_type or '(none)'} is not supported by the default handlers; "
            f"use one of {', '.join(SUPPORTED)} or define input_fn/output_fn in your inference script."
        )


def media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def decode(body: bytes, content_type: str) -> np.ndarray:
    kind = media_type(content_type)
    try:
        if kind == JSON:
            return np.array(json.loads(body))
        if kind == CSV:
            text = body.decode("utf-8")
            return np.genfromtxt(io.StringIO(text), delimiter=",", dtype=np.float32, ndmin=2)
        if kind == NPY:
            return np.load(io.BytesIO(body), allow_pickle=False)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"The {kind} payload could not be read: {exc}") from exc
    raise UnsupportedFormatError(content_type)


def _plain(data: Any) -> Any:
    if hasattr(data, "detach"):  # a torch tensor
        data = data.detach().cpu().numpy()
    return data


def encode(data: Any, accept: str) -> bytes:
    kind = media_type(accept)
    data = _plain(data)
    if kind == JSON:
        return json.dumps(data.tolist() if isinstance(data, np.ndarray | np.generic) else data).encode()
    if kind == CSV:
        array = np.asarray(data)
        text = io.StringIO()
        np.savetxt(text, array if array.ndim else array.reshape(1), delimiter=",", fmt="%s")
        return text.getvalue().encode()
    if kind == NPY:
        binary = io.BytesIO()
        np.save(binary, np.asarray(data), allow_pickle=False)
        return binary.getvalue()
    raise UnsupportedFormatError(accept)
