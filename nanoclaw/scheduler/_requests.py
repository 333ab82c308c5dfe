"""Requests from inside a container to schedule, pause, resume or cancel a task."""
from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import ValidationError

from nanoclaw.errors import Forbidden, Invalid
from nanoclaw.scheduler._model import ScheduleCreate, ScheduleUpdate

if TYPE_CHECKING:
    from nanoclaw.scheduler._service import Scheduler


async def handle_request(scheduler: Scheduler, group: str, is_main: bool, request: dict) -> None:
    """A schedule_task / pause_task / resume_task / cancel_task request from `group`'s container.

    A non-main group may only schedule for itself and manage its own
    schedules (Forbidden otherwise); a malformed request raises Invalid.
    """
    if not isinstance(request, dict):
        raise Invalid("a task request must be a JSON object")
    kind = request.get("type")
    by = f"ipc:{group}"
    if kind == "schedule_task":
        target = request.get("targetGroup") or group
        if target != group and not is_main:
            raise Forbidden(f"group {group!r} may only schedule tasks for itself, not for {target!r}")
        prompt = request.get("prompt")
        try:
            data = ScheduleCreate.model_validate({  # the container's values, checked here
                "name": prompt[:60] if isinstance(prompt, str) else "",
                "group": target,
                "prompt": prompt,
                "schedule": _interval_as_number(request.get("schedule")),
                "contextMode": request.get("contextMode") or "isolated",
            })
        except ValidationError as error:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
            raise Invalid(f"malformed schedule_task request: {problems}") from None
        await scheduler.create(data, by=by)
    elif kind in ("pause_task", "resume_task", "cancel_task"):
        task_id = request.get("taskId")
        if not isinstance(task_id, str) or not task_id:
            raise Invalid(f"{kind} needs a taskId")
        current = await scheduler.get(task_id)
        if current.group != group and not is_main:
            raise Forbidden(f"group {group!r} may only manage its own tasks")
        if kind == "cancel_task":
            await scheduler.delete(task_id, by=by)
        else:
            await scheduler.update(task_id, ScheduleUpdate(enabled=kind == "resume_task"), by=by)
    else:
        raise Invalid(f"unknown task request type {kind!r}")


def _interval_as_number(schedule):
    """Agents before issue 12 wrote an interval as a string ("3600000"): take an integer in a string."""
    if isinstance(schedule, dict) and schedule.get("type") == "interval":
        value = schedule.get("value")
        if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
            return schedule | {"value": int(value)}
    return schedule
