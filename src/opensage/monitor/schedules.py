"""Monitoring schedules: ``ScheduleExpression`` and the analysis window of one execution.

``cron(...)`` expressions have AWS's six fields (parsed as Application Auto Scaling's are, by
:func:`opensage.serving.scaling.parse_schedule`) and, as on SageMaker, run at most hourly: the
minutes field is one number (``cron(0 * ? * * *)`` hourly, ``cron(0 8 ? * * *)`` daily,
``cron(0 */6 ? * * *)`` every six hours). ``NOW`` runs once at once. An execution scheduled at ``t``
analyzes ``[t + DataAnalysisStartTime, t + DataAnalysisEndTime)`` — offsets such as ``-PT1H`` — or,
without them, the hour before ``t``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from opensage.serving import scaling

NOW = "NOW"
_OFFSET = re.compile(r"^-P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?$")
_CRON = re.compile(r"^cron\((.*)\)$")


class ScheduleError(ValueError):
    """The schedule cannot be used; the message says what to fix."""


@dataclass(frozen=True, slots=True)
class Schedule:
    expression: str
    cron: scaling.Schedule | None  # None: NOW
    start: dt.timedelta | None
    end: dt.timedelta | None

    @property
    def one_off(self) -> bool:
        return self.cron is None

    def due(self, after: dt.datetime, until: dt.datetime) -> dt.datetime | None:
        """The latest whole-minute moment in ``(after, until]`` the cron names (a missed run fires once)."""
        if self.cron is None or until <= after:
            return None
        if not self.cron.fires(after, until, after):
            return None
        moment = until.replace(second=0, microsecond=0)
        oldest = max(after, until - dt.timedelta(days=2))
        while moment > oldest:
            if self.cron.fires(moment - dt.timedelta(minutes=1), moment, after):
                return moment
            moment -= dt.timedelta(minutes=1)
        return None

    def window(self, scheduled: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
        start = scheduled + (self.start if self.start is not None else -dt.timedelta(hours=1))
        end = scheduled + (self.end if self.end is not None else dt.timedelta(0))
        return start, end


def offset(text: str, name: str) -> dt.timedelta:
    """``-PT1H`` -> minus one hour (an ISO 8601 duration before the scheduled time)."""
    m = _OFFSET.match(text.strip())
    if m is None or not any(m.groups()) and text.strip() not in ("-PT0H", "-P0D"):
        raise ScheduleError(f"{name} {text!r} is not a negative ISO 8601 duration such as -PT1H, -PT30M or -P1D.")
    days, hours, minutes, seconds = (int(g or 0) for g in m.groups())
    return -dt.timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)


def parse(config: Mapping[str, Any] | None) -> Schedule:
    """A ``ScheduleConfig`` (``ScheduleExpression``, ``DataAnalysisStartTime``, ``DataAnalysisEndTime``).

    Raises:
        ScheduleError: what is wrong and how to write it.
    """
    config = config or {}
    expression = str(config.get("ScheduleExpression") or "").strip()
    if not expression:
        raise ScheduleError("ScheduleConfig.ScheduleExpression is required, e.g. cron(0 * ? * * *) or NOW.")
    start_text, end_text = config.get("DataAnalysisStartTime"), config.get("DataAnalysisEndTime")
    start = offset(start_text, "DataAnalysisStartTime") if start_text else None
    end = offset(end_text, "DataAnalysisEndTime") if end_text else None
    if (start is None) != (end is None):
        raise ScheduleError("Give both DataAnalysisStartTime and DataAnalysisEndTime, or neither.")
    if start is not None and end is not None and start >= end:
        raise ScheduleError(f"DataAnalysisStartTime ({start_text}) must be before DataAnalysisEndTime ({end_text}).")
    if expression.upper() == NOW:
        if start is None:
            raise ScheduleError(
                "A NOW schedule needs DataAnalysisStartTime and DataAnalysisEndTime, e.g. -PT1H and -PT0H."
            )
        return Schedule(NOW, None, start, end)
    m = _CRON.match(expression)
    if m is None:
        raise ScheduleError(
            f"ScheduleExpression {expression!r} is not a cron expression such as cron(0 * ? * * *) (hourly) or "
            "cron(0 8 ? * * *) (daily at 08:00 UTC), nor NOW."
        )
    fields = m.group(1).split()
    if fields and not fields[0].isdigit():
        raise ScheduleError(
            f"ScheduleExpression {expression!r}: monitoring runs at most hourly, so the minutes field must be one "
            "number (e.g. 0), not a range, list or step."
        )
    try:
        cron = scaling.parse_schedule(expression)
    except ValueError as exc:
        raise ScheduleError(f"ScheduleExpression {exc}") from exc
    return Schedule(expression, cron, start, end)
