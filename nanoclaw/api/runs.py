"""/container/runs (on-demand runs, beyond the spec) and /container/run-history."""
from __future__ import annotations

from pydantic import BaseModel, Field
from quart import Blueprint
from quart_schema import validate_request, validate_response

from nanoclaw.api._common import Answer, ApiModel, Kept, answers, clamp, query, services
from nanoclaw.errors import NotFound
from nanoclaw.models import GROUP_NAME_PATTERN
from nanoclaw.supervisor import Work, history

bp = Blueprint("runs", __name__)


class RunRequest(ApiModel):
    group: str = Field(pattern=GROUP_NAME_PATTERN)
    prompt: str = Field(min_length=1, max_length=100_000)
    sessionId: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,64}$",
                                  description="Continue this session; a fresh one when null")


class TokenUsage(Answer):
    """Tokens the agent used, as its provider reported them; totalTokens is what budgets count."""

    inputTokens: int = 0
    outputTokens: int = 0
    cacheReadTokens: int = 0
    cacheCreationTokens: int = 0
    totalTokens: int = 0


class RunAccepted(Answer):
    runId: str


class Run(Answer):
    runId: str
    group: str
    kind: str
    status: str = Field(description="queued | running | success | error | timeout | cancelled | interrupted")
    containerName: str | None = None
    sessionId: str | None = None
    scheduleId: str | None = None
    startedAt: str | None = None
    finishedAt: str | None = None
    durationMs: int | None = None
    exitCode: int | None = None
    results: list[str] = Field(default_factory=list)
    result: str | None = None
    error: str | None = None
    usage: TokenUsage = Field(default_factory=TokenUsage, description="Summed over the run's turns")
    model: str | None = Field(default=None, description="The model that answered (as the runner reported it)")


class RunHistory(Kept):
    runs: list[Run]


class HistoryQuery(BaseModel):
    limit: int | None = Field(default=None, description="default 50, at most 500")
    group: str | None = None


@bp.post("/container/runs")
@validate_request(RunRequest)
@validate_response(RunAccepted, 202)
async def start_run(data: RunRequest):
    """Queue one agent run for a group; poll GET /container/runs/{runId} for its results.

    It gets a fresh session unless sessionId names one, and its container closes once it answered."""
    handle = await services().supervisor.submit(data.group, Work(data.prompt, session_id=data.sessionId))
    return RunAccepted(runId=handle.run_id), 202


@bp.get("/container/runs/<run_id>")
@validate_response(Run)
async def get_run(run_id: str):
    """One run: status, results, timing (queued runs included)."""
    svc = services()
    # Looked up before the row: a run that starts while the row is read leaves the queue after its
    # row is written, so one of the two always finds it.
    queued = svc.supervisor.queued_runs.get(run_id)
    record = await history.get_run(svc.db, run_id)
    if record is not None:
        return Run(**record)
    if queued is not None:
        return Run(runId=run_id, group=queued[0], kind=queued[1], status="queued")
    raise NotFound(f"No run with id {run_id!r}")


@bp.get("/container/run-history")
@query(HistoryQuery)
@answers(RunHistory)
async def run_history(query_args: HistoryQuery):
    """Newest first."""
    limit = clamp(query_args.limit, default=50, maximum=500)
    db = services().db

    async def build() -> RunHistory:
        runs = await history.list_runs(db, limit=limit, group=query_args.group)
        return RunHistory(runs=[Run(**r) for r in runs])

    return await db.cached(("run-history", limit, query_args.group), build)
