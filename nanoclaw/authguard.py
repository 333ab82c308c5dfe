"""Failed API keys: throttled per client address, audited as one entry per address per minute.

After LIMIT failures from one address within WINDOW seconds that address gets 429 with
Retry-After until the oldest failure leaves the window; a valid key is never refused.
Rejections are counted in memory and the audit entry of each (address, minute) is written
once and updated every FLUSH_SECONDS, so hostile traffic cannot grow the audit log fast.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from collections import OrderedDict, deque

import trio

from nanoclaw.audit import Audit
from nanoclaw.clock import Clock, iso

log = logging.getLogger("nanoclaw.auth")

WINDOW = 60.0
LIMIT = 20
FLUSH_SECONDS = 5.0
MAX_PATH = 200
# Addresses tracked at once; beyond it the oldest are forgotten and new ones share one entry.
MAX_CLIENTS = 10_000
OVERFLOW = "(other addresses)"


@dataclasses.dataclass
class _Entry:
    row_id: int | None = None
    count: int = 1
    throttled: int = 0
    dirty: bool = False


class AuthGuard:
    def __init__(self, audit: Audit, clock: Clock) -> None:
        self.audit = audit
        self.clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._entries: dict[tuple[str, int], _Entry] = {}
        self._first: dict[tuple[str, int], tuple[str, str]] = {}

    def retry_after(self, address: str) -> int | None:
        """Seconds until `address` may try a key again, or None when it may now."""
        times = self._failures.get(address)
        if times is None:
            return None
        cutoff = self.clock.now() - WINDOW
        while times and times[0] <= cutoff:
            times.popleft()
        if len(times) < LIMIT:
            return None
        return max(1, math.ceil(times[0] - cutoff))

    async def rejected(self, address: str, method: str, path: str, *, throttled: bool) -> None:
        """Count one refused request; the first of its address and minute writes the audit entry."""
        now = self.clock.now()
        if not throttled:
            times = self._failures.pop(address, None) or deque()
            times.append(now)
            self._failures[address] = times  # most recent last
            while len(self._failures) > MAX_CLIENTS:
                self._failures.popitem(last=False)
        minute = int(now // 60)
        key = (address, minute)
        if key not in self._entries and len(self._entries) >= MAX_CLIENTS:
            key = (OVERFLOW, minute)
        entry = self._entries.get(key)
        if entry is not None:
            entry.count += 1
            entry.throttled += throttled
            entry.dirty = True
            return
        entry = self._entries[key] = _Entry(throttled=int(throttled))
        self._first[key] = (method, path[:MAX_PATH])
        entry.row_id = await self.audit.record(
            "warning", "auth", f"rejected {method} {path[:MAX_PATH]}: missing or invalid API key",
            details=self._details(key, entry),
        )

    def _details(self, key: tuple[str, int], entry: _Entry) -> dict:
        address, minute = key
        method, path = self._first[key]
        return {"remoteAddr": address, "count": entry.count, "throttled": entry.throttled,
                "firstRequest": f"{method} {path}", "minute": iso(minute * 60.0)}

    async def flush(self) -> None:
        """Write the counts that changed; forget minutes that are over."""
        current = int(self.clock.now() // 60)
        for key, entry in list(self._entries.items()):
            if entry.dirty and entry.row_id is not None:
                entry.dirty = False
                await self.audit.update_details(entry.row_id, self._details(key, entry))
            if key[1] < current and not entry.dirty:
                del self._entries[key]
                del self._first[key]
        cutoff = self.clock.now() - WINDOW
        for address in [a for a, t in self._failures.items() if not t or t[-1] <= cutoff]:
            del self._failures[address]

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            while True:
                await trio.sleep(FLUSH_SECONDS)
                await self.flush()
        finally:
            with trio.CancelScope(shield=True):
                try:
                    await self.flush()
                except Exception:  # the store may be closing; counts are only lost, never wrong
                    log.debug("auth guard: final flush failed", exc_info=True)
