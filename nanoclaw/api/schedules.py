"""/container/schedules: scheduled tasks and their run logs."""
from __future__ import annotations

from pydantic import BaseModel, Field
from quart import Blueprint
from quart_schema import validate_querystring, validate_request, validate_response

from nanoclaw.api._common import Answer, Kept, answers, clamp, query, services
from nanoclaw.api.namespaces import check_config
from nanoclaw.scheduler import Schedule, ScheduleCreate, ScheduleLog, ScheduleUpdate

bp = Blueprint("schedules", __name__)


class ScheduleList(Kept):
    schedules: list[Schedule]
    total: int


class ListQuery(BaseModel):
    limit: int | None = Field(default=None, description="default 500, at most 5000")
    offset: int | None = Field(default=None, description="schedules to skip, default 0")
    group: str | None = Field(default=None, description="only this group's schedules")


class LogQuery(BaseModel):
    limit: int | None = Field(default=None, description="default 20, at most 500")
    offset: int | None = Field(default=None, description="rows to skip, default 0")


class ScheduleLogs(Answer):
    logs: list[ScheduleLog]
    total: int


@bp.get("/container/schedules")
@query(ListQuery)
@answers(ScheduleList)
async def list_schedules(query_args: ListQuery):
    """Schedules, oldest first, a page at a time (`total` counts them all)."""
    limit = clamp(query_args.limit, default=500, maximum=5000)
    offset = clamp(query_args.offset, default=0, maximum=2**31, minimum=0)
    svc = services()

    async def build() -> ScheduleList:
        schedules, total = await svc.scheduler.list(limit=limit, offset=offset, group=query_args.group)
        return ScheduleList(schedules=schedules, total=total)

    return await svc.db.cached(("schedules", limit, offset, query_args.group), build)


@bp.post("/container/schedules")
@validate_request(ScheduleCreate)
@validate_response(Schedule, 201)
async def create_schedule(data: ScheduleCreate):
    """Create a schedule; nextRun is computed at once (null while disabled)."""
    await check_config(data.containerConfig, data.group)
    return await services().scheduler.create(data), 201


@bp.get("/container/schedules/<schedule_id>")
@validate_response(Schedule)
async def get_schedule(schedule_id: str):
    """One schedule with its next and last run."""
    return await services().scheduler.get(schedule_id)


@bp.put("/container/schedules/<schedule_id>")
@validate_request(ScheduleUpdate)
@validate_response(Schedule)
async def update_schedule(schedule_id: str, data: ScheduleUpdate):
    """Change the given fields and recompute nextRun; enabled false pauses, true resumes."""
    scheduler = services().scheduler
    current = await scheduler.get(schedule_id)
    await check_config(data.containerConfig, data.group or current.group)
    return await scheduler.update(schedule_id, data)


@bp.post("/container/schedules/<schedule_id>/run")
@validate_response(Schedule)
async def run_schedule_now(schedule_id: str):
    """Fire an active schedule now (its next slot is computed from now); 409 when paused or completed."""
    return await services().scheduler.run_now(schedule_id)


@bp.delete("/container/schedules/<schedule_id>")
async def delete_schedule(schedule_id: str):
    """Delete the schedule and its logs."""
    await services().scheduler.delete(schedule_id)
    return "", 204


@bp.get("/container/schedules/<schedule_id>/logs")
@validate_querystring(LogQuery)
@validate_response(ScheduleLogs)
async def schedule_logs(schedule_id: str, query_args: LogQuery):
    """Runs, catch-ups, skipped slots and errors, newest first."""
    limit = clamp(query_args.limit, default=20, maximum=500)
    offset = clamp(query_args.offset, default=0, maximum=2**62, minimum=0)
    logs, total = await services().scheduler.logs(schedule_id, limit=limit, offset=offset)
    return ScheduleLogs(logs=logs, total=total)
