"""Times as the AWS JSON protocols carry them in resource descriptions: epoch seconds, millisecond precision."""

from __future__ import annotations

import datetime as dt


def epoch(now: dt.datetime) -> float:
    return round(now.timestamp(), 3)
