"""Tokens the agent used: summed per run from its result frames, and the monthly budget.

A group's tokens are inputTokens + outputTokens + cacheReadTokens + cacheCreationTokens
(inputTokens being the input not read from or written to a cache, as Anthropic reports it).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import sqlite3

from nanoclaw.store import Database

# (frame / API name, run_history column)
FIELDS = (("inputTokens", "input_tokens"), ("outputTokens", "output_tokens"),
          ("cacheReadTokens", "cache_read_tokens"), ("cacheCreationTokens", "cache_creation_tokens"))
# Per frame and field: whatever a (hostile) container reports, the sums stay sane.
FRAME_CAP = 100_000_000
TOTAL_SQL = " + ".join(column for _, column in FIELDS)


@dataclasses.dataclass
class Usage:
    counts: dict[str, int] = dataclasses.field(default_factory=lambda: {name: 0 for name, _ in FIELDS})
    model: str | None = None

    def add(self, frame: dict) -> bool:
        """Add a frame's `usage` and `model`; True when it carried any."""
        usage, model, seen = frame.get("usage"), frame.get("model"), False
        if isinstance(usage, dict):
            for name, _ in FIELDS:
                value = usage.get(name)
                if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                    self.counts[name] += min(value, FRAME_CAP)
                    seen = True
        if isinstance(model, str) and model.strip():
            self.model, seen = model.strip()[:200], True
        return seen

    def as_dict(self) -> dict[str, int]:
        return usage_dict(self.counts.values())


def usage_dict(values) -> dict[str, int]:
    """The API's usage object from the four counts in FIELDS order."""
    counts = dict(zip((name for name, _ in FIELDS), (int(v or 0) for v in values)))
    return counts | {"totalTokens": sum(counts.values())}


def row_usage(row: sqlite3.Row) -> dict[str, int]:
    return usage_dict(row[column] for _, column in FIELDS)


async def save_usage(db: Database, run_id: str, usage: Usage) -> None:
    await db.execute(
        f"UPDATE run_history SET {', '.join(f'{column} = ?' for _, column in FIELDS)}, model = ? WHERE id = ?",
        (*usage.counts.values(), usage.model, run_id))


def month_bounds(now: float) -> tuple[float, str]:
    """The start of now's calendar month (UTC) as a timestamp, and the next month's first day."""
    day = dt.datetime.fromtimestamp(now, dt.timezone.utc).replace(day=1, hour=0, minute=0, second=0,
                                                                   microsecond=0)
    following = (day + dt.timedelta(days=32)).replace(day=1)
    return day.timestamp(), following.date().isoformat()


async def budget_refusal(db: Database, group: str, budget: int | None, now: float) -> str | None:
    """Why a run of group may not start (its tokens this month reached the budget), else None."""
    if budget is None:
        return None
    start, following = month_bounds(now)
    row = await db.fetchone(
        f"SELECT COALESCE(SUM({TOTAL_SQL}), 0) FROM run_history WHERE group_name = ? AND started_at >= ?",
        (group, start))
    assert row is not None  # an aggregate always gives a row
    used = row[0]
    if used < budget:
        return None
    return (f"This group has used {used:,} tokens this month, its monthly token budget is {budget:,}: "
            f"no new runs until {following} (UTC) unless the budget (containerConfig.agent.monthlyTokenBudget) "
            f"is raised. Run refused.")


class RunRefused(Exception):
    """A run that may not start (its group's budget is spent); the message says why."""
