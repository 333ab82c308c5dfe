"""Tokens the agent used: summed per run from its result frames, and the monthly budget.

A group's tokens are inputTokens + outputTokens + cacheReadTokens + cacheCreationTokens
(inputTokens being the input not read from or written to a cache, as Anthropic reports it).
"""
from __future__ import annotations

import dataclasses
import sqlite3

from nanoclaw.proxy import metered_month, month_start
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


async def budget_refusal(db: Database, group: str, budget: int | None, now: float) -> str | None:
    """Why a run of group may not start (its tokens this month reached the budget), else None."""
    if budget is None:
        return None
    following = month_start(now)[1]
    used = await metered_month(db, group, now)  # what the upstream reported, never the runner
    if used < budget:
        return None
    return (f"This group has used {used:,} metered tokens this month, its monthly token budget is {budget:,}: "
            f"no new runs until {following} (UTC) unless the budget (containerConfig.agent.monthlyTokenBudget) "
            f"is raised. Run refused.")


class RunRefused(Exception):
    """A run that may not start (its group's budget is spent); the message says why."""
