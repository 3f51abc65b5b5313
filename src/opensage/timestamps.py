"""Times as the AWS JSON protocols carry them in resource descriptions: epoch seconds, millisecond precision."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any


def epoch(now: dt.datetime) -> float:
    return round(now.timestamp(), 3)


def jsonable(value: Any) -> Any:
    """A parsed request as JSON: datetimes as epoch seconds, blobs as base64 (as the wire carries them)."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, dt.datetime):
        return epoch(value)
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode()
    return value
