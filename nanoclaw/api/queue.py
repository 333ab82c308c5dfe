"""/container/queue: groups, counts, one group's state, the concurrency limit."""
from __future__ import annotations

from pydantic import Field
from quart import Blueprint
from quart_schema import validate_request, validate_response

from nanoclaw.api._common import Answer, ApiModel, answers, services
from nanoclaw.clock import iso
from nanoclaw.supervisor import measure_disk

bp = Blueprint("queue", __name__)


class QueueCounts(Answer):
    queued: int
    running: int
    total: int


class GroupState(Answer):
    group: str
    active: bool
    idle: bool
    containerKind: str | None = Field(description='"message" | "task" | "adhoc" while active')
    containerName: str | None
    sessionId: str | None
    startedAt: str | None
    waitingForSlot: bool
    pendingMessages: bool
    pendingTasks: int
    pendingRuns: int
    retryCount: int
    nextRetryAt: str | None
    diskMb: float | None = Field(default=None,
                                 description="Size of the group's folders (group, sessions, IPC, media) in MiB")


class MaxConcurrent(ApiModel):
    maxConcurrent: int = Field(ge=1, le=64)


@bp.get("/container/queue/groups")
@validate_response(list[str])
async def list_groups():
    """Every namespace plus any group the queue has seen, by name."""
    svc = services()
    names = {ns.name for ns in await svc.namespaces.list()} | set(svc.supervisor.queues)
    return sorted(names)


@bp.get("/container/queue/counts")
@answers(QueueCounts)
async def counts():
    """How many groups have a running container and how many wait for a slot."""
    stats = services().supervisor.statistics()
    return QueueCounts(queued=stats.queued, running=stats.running, total=stats.total)


@bp.get("/container/queue/groups/<group>")
@validate_response(GroupState)
async def group_state(group: str):
    """One group's queue state: its container, what is pending, retries."""
    svc = services()
    if group not in svc.supervisor.queues:
        await svc.namespaces.get(group)
    await measure_disk(svc.supervisor, group)
    state = svc.supervisor.group_state(group)
    state["startedAt"] = iso(state["startedAt"])
    state["nextRetryAt"] = iso(state["nextRetryAt"])
    return GroupState(**state)


@bp.get("/container/queue/max-concurrent")
@validate_response(MaxConcurrent)
async def get_max_concurrent():
    """The limit on containers running at once."""
    return MaxConcurrent(maxConcurrent=services().supervisor.statistics().max_concurrent)


@bp.put("/container/queue/max-concurrent")
@validate_request(MaxConcurrent)
@validate_response(MaxConcurrent)
async def put_max_concurrent(data: MaxConcurrent):
    """Takes effect at once: raising the limit starts waiting groups now."""
    await services().supervisor.save_max_concurrent(data.maxConcurrent)
    return data
