"""Application Auto Scaling's decisions besides target tracking, as pure functions of their inputs.

Nothing here reads a clock, a store or a metric: the autoscaler (:mod:`opensage.serving.autoscaler`)
hands each function what it read, and the unit tests step them with numbers.

* :func:`alarm_state` — a CloudWatch metric alarm's state from its latest datapoints: ``ALARM`` when
  at least ``DatapointsToAlarm`` of the last ``EvaluationPeriods`` breach the threshold, missing
  datapoints treated as ``TreatMissingData`` says (``missing``, ``breaching``, ``notBreaching``,
  ``ignore``).
* :func:`step_decide` — a StepScaling policy run by its alarm: the step whose interval (relative to
  the alarm's threshold) holds the breach, applied as ``ChangeInCapacity``, ``PercentChangeInCapacity``
  (fractions rounded away from zero, ``MinAdjustmentMagnitude``) or ``ExactCapacity``, within the
  target's bounds; within ``Cooldown`` after a scaling, a scale-out only when it asks for more than
  the last one gave, and no scale-in.
* :func:`parse_schedule` / :meth:`Schedule.fires` — scheduled actions' ``at(...)``, ``rate(...)`` and
  ``cron(...)`` expressions (AWS's six cron fields: minutes, hours, day of month, month, day of week,
  year), evaluated in the action's time zone.
"""

from __future__ import annotations

import datetime as dt
import math
import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

ALARM, OK, INSUFFICIENT_DATA = "ALARM", "OK", "INSUFFICIENT_DATA"
COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    "GreaterThanOrEqualToThreshold": operator.ge,
    "GreaterThanThreshold": operator.gt,
    "LessThanThreshold": operator.lt,
    "LessThanOrEqualToThreshold": operator.le,
}
TREAT_MISSING = ("missing", "breaching", "notBreaching", "ignore")
ADJUSTMENT_TYPES = ("ChangeInCapacity", "PercentChangeInCapacity", "ExactCapacity")
DEFAULT_STEP_COOLDOWN_S = 300.0


# --- CloudWatch alarms --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AlarmRule:
    threshold: float
    comparison: str  # one of COMPARISONS
    evaluation_periods: int = 1
    datapoints_to_alarm: int | None = None  # None: EvaluationPeriods
    treat_missing: str = "missing"


def alarm_state(rule: AlarmRule, values: Sequence[float | None], current: str = INSUFFICIENT_DATA) -> str:
    """The state of an alarm whose last ``EvaluationPeriods`` datapoints are ``values`` (oldest first,
    ``None`` where a period has none)."""
    given: list[float | None] = list(values)[-rule.evaluation_periods :]
    padding: list[float | None] = [None] * (rule.evaluation_periods - len(given))
    window = padding + given
    present = [v for v in window if v is not None]
    missing = len(window) - len(present)
    if not present:
        return {"breaching": ALARM, "notBreaching": OK, "ignore": current}.get(rule.treat_missing, INSUFFICIENT_DATA)
    breach = COMPARISONS[rule.comparison]
    breaching = sum(1 for v in present if breach(v, rule.threshold))
    if rule.treat_missing == "breaching":
        breaching += missing
    needed = rule.datapoints_to_alarm or rule.evaluation_periods
    return ALARM if breaching >= needed else OK


# --- step scaling -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Step:
    lower: float | None  # MetricIntervalLowerBound (inclusive), relative to the alarm's threshold
    upper: float | None  # MetricIntervalUpperBound (exclusive)
    adjustment: int

    def holds(self, breach: float) -> bool:
        return (self.lower is None or breach >= self.lower) and (self.upper is None or breach < self.upper)


@dataclass(frozen=True, slots=True)
class StepPolicy:
    adjustment_type: str
    steps: tuple[Step, ...]
    min_capacity: int
    max_capacity: int
    cooldown_s: float = DEFAULT_STEP_COOLDOWN_S
    min_adjustment_magnitude: int | None = None


@dataclass(slots=True)
class StepState:
    """What the autoscaler remembers of one step policy between its runs."""

    last_scaled: float = -math.inf
    base: int | None = None  # the count before the last scale-out


def _delta(policy: StepPolicy, capacity: int, adjustment: int) -> int:
    if policy.adjustment_type != "PercentChangeInCapacity":
        return adjustment
    raw = capacity * adjustment / 100.0
    delta = int(raw) if abs(raw) >= 1 else (1 if raw > 0 else -1 if raw < 0 else 0)  # toward zero, at least 1
    magnitude = policy.min_adjustment_magnitude
    if magnitude and 0 < abs(delta) < magnitude:
        delta = magnitude if delta > 0 else -magnitude
    return delta


def _apply(policy: StepPolicy, capacity: int, step: Step) -> int:
    if policy.adjustment_type == "ExactCapacity":
        wanted = step.adjustment
    else:
        wanted = capacity + _delta(policy, capacity, step.adjustment)
    return min(max(wanted, policy.min_capacity), max(policy.min_capacity, policy.max_capacity))


def step_decide(policy: StepPolicy, capacity: int, breach: float, now: float, state: StepState) -> int | None:
    """The new count when the policy's alarm is in ALARM with the metric ``breach`` past its threshold
    (metric minus threshold); None: leave it. Updates ``state``.

    Within the cooldown of a scale-out, the capacity it added counts toward the next one (the step
    applies to the count before it), so the same breach does not add capacity twice; no scale-in then."""
    step = next((s for s in policy.steps if s.holds(breach)), None)
    if step is None:
        return None
    cooling = now - state.last_scaled < policy.cooldown_s
    wanted = _apply(policy, capacity, step)
    if cooling and state.base is not None and wanted > capacity:
        wanted = _apply(policy, state.base, step)
    if wanted == capacity or (cooling and wanted < capacity):
        return None
    if wanted > capacity:
        state.base = capacity if not cooling or state.base is None else state.base
    else:
        state.base = None
    state.last_scaled = now
    return wanted


# --- schedules ----------------------------------------------------------------------------------------

_AT = re.compile(r"^at\((\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})\)$")
_RATE = re.compile(r"^rate\((\d+) (minute|minutes|hour|hours|day|days)\)$")
_CRON = re.compile(r"^cron\((.+)\)$")
_UNITS = {"minute": 60, "hour": 3600, "day": 86400}
_MONTHS = {
    m: i + 1
    for i, m in enumerate(["JAN", "FEB", "MAR", "APR", "MAY", "JUN"] + ["JUL", "AUG", "SEP", "OCT", "NOV", "DEC"])
}
_DAYS = {d: i + 1 for i, d in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"])}  # AWS: 1 is Sunday
_NONE: dict[str, int] = {}
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minutes", 0, 59, _NONE),
    ("hours", 0, 23, _NONE),
    ("day-of-month", 1, 31, _NONE),
    ("month", 1, 12, _MONTHS),
    ("day-of-week", 1, 7, _DAYS),
    ("year", 1970, 2199, _NONE),
)
_CRON_SCAN_LIMIT = 24 * 60  # minutes looked at per evaluation (a longer gap fires at most once anyway)


@dataclass(frozen=True, slots=True)
class Schedule:
    """A parsed schedule; ``fires(after, until)`` says whether it is due in ``(after, until]``."""

    kind: str  # at | rate | cron
    at: dt.datetime | None = None  # at: the moment, aware
    every_s: int = 0  # rate
    cron: tuple[frozenset[int] | None, ...] = field(default=())  # cron: the allowed values per field (None: any)
    zone: dt.tzinfo = dt.UTC

    def fires(self, after: dt.datetime, until: dt.datetime, anchor: dt.datetime) -> bool:
        """Due at a moment in ``(after, until]``; ``anchor`` is when a rate's intervals start."""
        return self.due(after, until, anchor) is not None

    def due(self, after: dt.datetime, until: dt.datetime, anchor: dt.datetime) -> dt.datetime | None:
        """The last moment in ``(after, until]`` the schedule names (``None``: none); ``anchor`` is when a
        rate's intervals start. A cron schedule is looked at over at most a day before ``until``."""
        if until <= after:
            return None
        if self.kind == "at":
            assert self.at is not None
            return self.at if after < self.at <= until else None
        if self.kind == "rate":  # at anchor + k * rate, k >= 1
            k_until = math.floor((until - anchor).total_seconds() / self.every_s)
            k_after = math.floor((after - anchor).total_seconds() / self.every_s)
            if k_until >= 1 and k_until > max(k_after, 0):
                return anchor + dt.timedelta(seconds=k_until * self.every_s)
            return None
        return self._cron_due(after, until)

    def _cron_due(self, after: dt.datetime, until: dt.datetime) -> dt.datetime | None:
        first = after.astimezone(self.zone).replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
        minute = until.astimezone(self.zone).replace(second=0, microsecond=0)
        for _ in range(_CRON_SCAN_LIMIT):
            if minute < first:
                return None
            if self._matches(minute):
                return minute
            minute -= dt.timedelta(minutes=1)
        return None

    def _matches(self, t: dt.datetime) -> bool:
        minutes, hours, dom, month, dow, year = self.cron
        day_of_week = (t.isoweekday() % 7) + 1  # Sunday 1 ... Saturday 7
        values = ((minutes, t.minute), (hours, t.hour), (dom, t.day), (month, t.month), (dow, day_of_week))
        return all(allowed is None or v in allowed for allowed, v in (*values, (year, t.year)))


def parse_schedule(expression: str, timezone: str | None = None) -> Schedule:
    """``at(yyyy-mm-ddThh:mm:ss)``, ``rate(value unit)`` or ``cron(fields)``.

    Raises:
        ValueError: the expression or time zone is not one of those; the message says what to fix.
    """
    try:
        zone: dt.tzinfo = ZoneInfo(timezone) if timezone else dt.UTC
    except (KeyError, ValueError) as exc:
        raise ValueError(f"Timezone {timezone!r} is not an IANA time zone name (e.g. Europe/Berlin).") from exc
    text = expression.strip()
    if m := _AT.match(text):
        moment = dt.datetime.fromisoformat(m.group(1)).replace(tzinfo=zone)
        return Schedule("at", at=moment, zone=zone)
    if m := _RATE.match(text):
        value, unit = int(m.group(1)), m.group(2).rstrip("s")
        if value < 1:
            raise ValueError(f"{expression}: the rate must be at least 1 {unit}.")
        if (value == 1) != (m.group(2) == unit):
            raise ValueError(f"{expression}: say '1 {unit}' and '{value if value > 1 else 2} {unit}s'.")
        return Schedule("rate", every_s=value * _UNITS[unit], zone=zone)
    if m := _CRON.match(text):
        return Schedule("cron", cron=_cron_fields(expression, m.group(1).split()), zone=zone)
    raise ValueError(
        f"Schedule {expression!r} is not at(yyyy-mm-ddThh:mm:ss), rate(value unit) or cron(minutes hours "
        "day-of-month month day-of-week year)."
    )


def _cron_fields(expression: str, fields: list[str]) -> tuple[frozenset[int] | None, ...]:
    if len(fields) != 6:
        raise ValueError(
            f"{expression}: a cron expression has six fields (minutes hours day-of-month month day-of-week year); "
            f"it has {len(fields)}."
        )
    if (fields[2] == "?") == (fields[4] == "?"):
        raise ValueError(f"{expression}: exactly one of day-of-month and day-of-week must be '?'.")
    return tuple(_cron_field(expression, text, *spec) for text, spec in zip(fields, _FIELDS, strict=True))


def _cron_field(
    expression: str, text: str, name: str, low: int, high: int, names: dict[str, int]
) -> frozenset[int] | None:
    if text in ("*", "?"):
        return None
    bare = re.sub("|".join(names) or "^$", "", text.upper()) if names else text.upper()
    if any(c in bare for c in "LW#"):
        raise ValueError(f"{expression}: the {name} field's L, W and # forms are not supported by OpenSage.")
    values: set[int] = set()
    for part in text.split(","):
        base, _, step_text = part.partition("/")
        try:
            step = int(step_text) if step_text else 1
            if base == "*":
                first, last = low, high
            else:
                first_text, _, last_text = base.partition("-")
                first = _cron_value(first_text, names)
                last = _cron_value(last_text, names) if last_text else (high if step_text else first)
        except ValueError as exc:
            raise ValueError(f"{expression}: {part!r} is not a valid {name} value.") from exc
        if not (low <= first <= high and low <= last <= high) or first > last or step < 1:
            raise ValueError(f"{expression}: {part!r} is outside the {name} field's {low}-{high}.")
        values.update(range(first, last + 1, step))
    return frozenset(values)


def _cron_value(text: str, names: dict[str, int]) -> int:
    return names[text.upper()] if text.upper() in names else int(text)
