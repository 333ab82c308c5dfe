"""When a schedule runs: cron (local wall time of a timezone), interval, once.

All instants are integer milliseconds since the Unix epoch, so interval
arithmetic is exact and never drifts.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

from nanoclaw.clock import local_timezone  # noqa: F401  (re-exported)
from nanoclaw.errors import Invalid

MIN_INTERVAL_MS = 1000
MAX_INTERVAL_MS = 366 * 24 * 3600 * 1000
# Missed slots listed one log row each after downtime; beyond this, one summary row.
MAX_LISTED_SLOTS = 100


@dataclasses.dataclass(frozen=True)
class Timing:
    type: str  # cron | interval | once
    value: str | int
    zone: ZoneInfo

    @property
    def step_ms(self) -> int:
        """An interval schedule's step."""
        assert isinstance(self.value, int), "not an interval"
        return self.value


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise Invalid(f"Unknown timezone {name!r}; use an IANA name such as 'Europe/Berlin' or 'UTC'") from None




def parse(kind: str, value, timezone: str) -> Timing:
    """Check a schedule's {type, value} and timezone; raise Invalid with a message a person can act on."""
    tz = zone(timezone)
    if kind == "cron":
        if not isinstance(value, str) or len(value.split()) != 5 or not croniter.is_valid(value):
            raise Invalid(f"schedule.value {value!r} is not a valid 5-field cron expression "
                          "(minute hour day-of-month month day-of-week, e.g. '0 9 * * 1-5')")
        try:
            croniter(value, dt.datetime(2000, 1, 1)).get_next(dt.datetime)
        except CroniterError:
            raise Invalid(f"schedule.value {value!r} never matches a date") from None
        return Timing(kind, " ".join(value.split()), tz)
    if kind == "interval":
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(f"schedule.value for an interval must be an integer number of milliseconds, got {value!r}")
        if not MIN_INTERVAL_MS <= value <= MAX_INTERVAL_MS:
            raise Invalid(f"schedule.value must be between {MIN_INTERVAL_MS} ms and {MAX_INTERVAL_MS} ms "
                          f"(366 days), got {value}")
        return Timing(kind, value, tz)
    if kind == "once":
        if not isinstance(value, str):
            raise Invalid(f"schedule.value for once must be an ISO 8601 date-time string, got {value!r}")
        try:
            dt.datetime.fromisoformat(value)
        except ValueError:
            raise Invalid(f"schedule.value {value!r} is not an ISO 8601 date-time "
                          "(e.g. '2026-04-01T02:00:00Z')") from None
        return Timing(kind, value, tz)
    raise Invalid(f"schedule.type must be cron, interval or once, got {kind!r}")


def _ms(moment: dt.datetime) -> int:
    return round(moment.timestamp() * 1000)


def _once_ms(timing: Timing) -> int:
    moment = dt.datetime.fromisoformat(str(timing.value))
    if moment.tzinfo is None:
        # A time without an offset is wall time in the schedule's timezone.
        moment = moment.replace(tzinfo=timing.zone)
    return _ms(moment)


def _cron_after(timing: Timing, after_ms: int) -> int:
    """The first cron slot strictly after after_ms.

    croniter walks naive local wall time; each candidate is then placed in the
    zone. A time skipped by a DST jump resolves with the offset from before the
    jump (02:30 becomes 03:30 after clocks spring forward), and a time that
    occurs twice runs at its first occurrence only.
    """
    local = dt.datetime.fromtimestamp(after_ms / 1000, timing.zone).replace(tzinfo=None)
    candidates = croniter(timing.value, local.replace(microsecond=0))
    while True:
        slot = _ms(candidates.get_next(dt.datetime).replace(tzinfo=timing.zone, fold=0))
        # In the repeated hour after clocks fall back, a candidate can map to
        # an instant we have already passed.
        if slot > after_ms:
            return slot


def first_run(timing: Timing, now_ms: int) -> int:
    if timing.type == "cron":
        return _cron_after(timing, now_ms)
    if timing.type == "interval":
        return now_ms + timing.step_ms
    return _once_ms(timing)


def due_slots(timing: Timing, planned_ms: int, now_ms: int) -> tuple[list[int], bool, int | None]:
    """The slots from planned_ms up to now_ms, whether more were left out of the
    list, and the next slot after now_ms (None: the schedule is over).

    Interval slots stay on the grid planned_ms + k * interval, so downtime or a
    late wake-up never shifts later runs.
    """
    if timing.type == "once":
        return [planned_ms], False, None
    if timing.type == "interval":
        step = timing.step_ms
        due = (now_ms - planned_ms) // step + 1
        listed = [planned_ms + k * step for k in range(min(due, MAX_LISTED_SLOTS))]
        return listed, due > MAX_LISTED_SLOTS, planned_ms + due * step
    listed = [planned_ms]
    slot = _cron_after(timing, planned_ms)
    while slot <= now_ms and len(listed) < MAX_LISTED_SLOTS:
        listed.append(slot)
        slot = _cron_after(timing, slot)
    if slot <= now_ms:
        return listed, True, _cron_after(timing, now_ms)
    return listed, False, slot
