"""/container/metrics and /container/analytics."""
from __future__ import annotations

from pydantic import Field
from quart import Blueprint
from quart_schema import validate_response

from nanoclaw.api._common import Answer, answers, services
from nanoclaw.api.runs import TokenUsage
from nanoclaw.supervisor import history

bp = Blueprint("monitoring", __name__)
ANALYTICS_DAYS = 30


class SecurityEvents(Answer):
    info: int
    warning: int
    violation: int
    error: int


class Metrics(Answer):
    running: int
    queued: int
    maxConcurrent: int
    runtimeAvailable: bool
    securityEvents: SecurityEvents
    runsLastHour: int


class DayStats(Answer):
    date: str
    runs: int
    success: int
    failed: int
    usage: TokenUsage = Field(description="Tokens of the runs started that day (UTC)")


class GroupTokens(Answer):
    group: str
    runs: int
    usage: TokenUsage


class Analytics(Answer):
    days: int
    totalRuns: int
    runsPerDay: list[DayStats]
    tokensPerGroup: list[GroupTokens] = Field(description="Most tokens first")
    usage: TokenUsage = Field(description="Tokens of every run in the period")
    successRate: float | None
    averageDurationMs: int | None
    p95DurationMs: int | None


@bp.get("/container/metrics")
@answers(Metrics)
async def metrics():
    """Running and queued containers, the limit, audit events by severity, runs in the last hour."""
    svc = services()

    async def stored() -> tuple[SecurityEvents, int]:
        return (SecurityEvents(**await svc.audit.counts_by_severity()),
                await history.runs_since(svc.db, svc.clock.now() - 3600))

    security, runs_last_hour = await svc.db.cached("metrics", stored)
    stats = svc.supervisor.statistics()
    return Metrics(
        running=stats.running, queued=stats.queued, maxConcurrent=stats.max_concurrent,
        runtimeAvailable=svc.runtime.state.available, securityEvents=security, runsLastHour=runs_last_hour,
    )


@bp.get("/container/analytics")
@validate_response(Analytics)
async def analytics():
    """The last 30 days: runs and tokens per day, tokens per group, success rate, average and p95 duration."""
    svc = services()
    return Analytics(**await history.analytics(svc.db, svc.clock.now() - ANALYTICS_DAYS * 86400))
