"""Wall-clock time derived from Trio's clock, so tests can swap in MockClock.

`Clock.now()` is Unix time in seconds. It is `trio.current_time()` plus a fixed
offset taken once, so under `autojump_clock` wall time jumps with the mock
clock and `sleep_until(wall_time)` is an ordinary `trio.sleep_until`.
"""
from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path
from typing import overload
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import trio


class Clock:
    def __init__(self, start: float | None = None) -> None:
        # start: the Unix time that trio.current_time() == 0 maps to when given
        # (tests); otherwise the real wall clock at the first call.
        self._start = start
        self._offset: float | None = None

    def _get_offset(self) -> float:
        if self._offset is None:
            if self._start is not None:
                self._offset = self._start
            else:
                self._offset = time.time() - trio.current_time()
        return self._offset

    def now(self) -> float:
        return self._get_offset() + trio.current_time()

    def now_ms(self) -> int:
        return int(self.now() * 1000)

    def to_trio(self, wall: float) -> float:
        return wall - self._get_offset()

    async def sleep_until(self, wall: float) -> None:
        await trio.sleep_until(self.to_trio(wall))


@overload
def iso(ts: float) -> str: ...
@overload
def iso(ts: None) -> None: ...
@overload
def iso(ts: float | None) -> str | None: ...


def iso(ts: float | None) -> str | None:
    """Unix seconds -> ISO 8601 UTC with milliseconds, as every answer shows time."""
    if ts is None:
        return None
    return (
        dt.datetime.fromtimestamp(ts, dt.timezone.utc)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def local_timezone() -> str:
    """The server's IANA timezone name: $TZ, else the /etc/localtime link, else UTC."""
    candidates = [os.environ.get("TZ", "").lstrip(":")]
    try:
        target = str(Path("/etc/localtime").resolve())
    except (OSError, RuntimeError):  # RuntimeError: a loop of links
        target = ""
    if "zoneinfo/" in target:
        candidates.append(target.split("zoneinfo/", 1)[1])
    for name in candidates:
        if name:
            try:
                ZoneInfo(name)
                return name
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return "UTC"
