"""Tokens metered from the upstream's own answers, and the monthly budget they count against.

What a container's runner reports may be shown; only these numbers limit. Parsing is
incremental and bounded: a malformed or hostile frame is skipped, never fatal.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json

from nanoclaw.clock import Clock
from nanoclaw.store import Database

# Anthropic / OpenAI usage field -> metered_usage column.
_FIELDS = {"input_tokens": "input_tokens", "output_tokens": "output_tokens",
           "cache_read_input_tokens": "cache_read_tokens", "cache_creation_input_tokens": "cache_creation_tokens",
           "prompt_tokens": "input_tokens", "completion_tokens": "output_tokens"}
COLUMNS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens")
FIELD_CAP = 100_000_000
MAX_LINE = 256 * 1024        # an SSE line longer than this is dropped unparsed
MAX_JSON = 4 * 1024 * 1024   # a JSON answer longer than this is not parsed
MAX_REQUEST = 32 * 1024 * 1024  # request bodies read to add stream_options, at most


def month_start(now: float) -> tuple[float, str]:
    """The start of now's calendar month (UTC) as a timestamp, and the next month's first day."""
    day = dt.datetime.fromtimestamp(now, dt.timezone.utc).replace(day=1, hour=0, minute=0, second=0,
                                                                   microsecond=0)
    return day.timestamp(), (day + dt.timedelta(days=32)).replace(day=1).date().isoformat()


async def metered_month(db: Database, group: str, now: float) -> int:
    """The group's metered tokens in now's calendar month."""
    row = await db.fetchone(f"SELECT COALESCE(SUM({' + '.join(COLUMNS)}), 0) FROM metered_usage "
                            "WHERE group_name = ? AND ts >= ?", (group, month_start(now)[0]))
    assert row is not None  # an aggregate always gives a row
    return int(row[0])


class UsageParser:
    """Fed the response body chunk by chunk; `counts` holds the largest value seen per column
    (Anthropic streams repeat cumulative counts; message_start and message_delta split them)."""

    def __init__(self, content_type: str) -> None:
        self.sse = content_type.split(";")[0].strip().lower() == "text/event-stream"
        self.counts = dict.fromkeys(COLUMNS, 0)
        self._buffer = bytearray()
        self._overlong = False

    def feed(self, chunk: bytes) -> None:
        if not self.sse:
            if len(self._buffer) + len(chunk) <= MAX_JSON:
                self._buffer += chunk
            else:
                self._overlong = True
            return
        self._buffer += chunk
        while (end := self._buffer.find(b"\n")) >= 0:
            line = bytes(self._buffer[:end])
            del self._buffer[:end + 1]
            if self._overlong:
                self._overlong = False
            elif line.startswith(b"data:"):
                self._take(line[5:])
        if len(self._buffer) > MAX_LINE:
            self._buffer.clear()
            self._overlong = True

    def finish(self) -> dict[str, int]:
        if not self.sse and not self._overlong:
            self._take(bytes(self._buffer))
        self._buffer.clear()
        return self.counts

    def _take(self, data: bytes) -> None:
        try:
            event = json.loads(data)
        except (ValueError, RecursionError):
            return
        if not isinstance(event, dict):
            return
        for usage in (event.get("usage"), (event.get("message") or {}).get("usage")
                      if isinstance(event.get("message"), dict) else None):
            if isinstance(usage, dict):
                for field, column in _FIELDS.items():
                    value = usage.get(field)
                    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                        self.counts[column] = max(self.counts[column], min(value, FIELD_CAP))


def with_include_usage(body: bytes) -> bytes | None:
    """A streamed chat-completions request body asking for usage, or None to send it as it is."""
    try:
        request = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(request, dict) or request.get("stream") is not True:
        return None
    options = request.get("stream_options")
    if options is None:
        options = request["stream_options"] = {}
    if not isinstance(options, dict) or options.get("include_usage") is True:
        return None
    options["include_usage"] = True
    return json.dumps(request).encode()


@dataclasses.dataclass
class RunMeter:
    run_id: str | None
    budget: int | None


class Meter:
    """Records what the upstream reported per run, group and mapping; says when a group's month is spent."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock
        self.runs: dict[str, RunMeter] = {}  # run token -> its run id and budget

    async def spent(self, token: str, group: str) -> tuple[int, int, str] | None:
        """(used, budget, next month) when the run's group has used its month's budget, else None."""
        run = self.runs.get(token)
        if run is None or run.budget is None:
            return None
        now = self.clock.now()
        used = await metered_month(self.db, group, now)
        return (used, run.budget, month_start(now)[1]) if used >= run.budget else None

    async def record(self, token: str, group: str, mapping: str, counts: dict[str, int]) -> None:
        if not any(counts.values()):
            return
        run = self.runs.get(token)
        await self.db.execute(
            f"INSERT INTO metered_usage (run_id, group_name, mapping, ts, {', '.join(COLUMNS)}) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (run.run_id if run else None, group, mapping, self.clock.now(), *(counts[c] for c in COLUMNS)))
