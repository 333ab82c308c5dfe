"""Schedule records as the API and the IPC requests see them."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from nanoclaw.models import ContainerConfig, Strict

ContextMode = Literal["isolated", "group"]
Status = Literal["active", "paused", "completed"]
LogStatus = Literal["running", "success", "error", "skipped", "timeout"]


class ScheduleSpec(Strict):
    type: Literal["cron", "interval", "once"]
    value: str | int | float = Field(
        description="cron: a 5-field cron expression; interval: milliseconds (>= 1000); "
                    "once: an ISO 8601 date-time (without an offset it is read in the schedule's timezone)")


class ScheduleCreate(Strict):
    name: str = Field(min_length=1, max_length=200)
    group: str = Field(min_length=1, max_length=64, description="The namespace the task runs in")
    prompt: str = Field(min_length=1, max_length=100_000)
    schedule: ScheduleSpec
    containerConfig: ContainerConfig | None = Field(
        default=None, description="Fields given here override the namespace's containerConfig")
    contextMode: ContextMode = Field(
        default="isolated", description="isolated: a fresh session; group: continue the group's session")
    enabled: bool = True
    timezone: str | None = Field(default=None, max_length=64,
                                 description="IANA name for cron and offset-less once times; the server's by default")
    chatJid: str | None = Field(default=None, max_length=200,
                                description="Where results are sent; the group's first chat by default")


class ScheduleUpdate(Strict):
    """Every writable field is optional; only the ones given change.

    The read-only fields may be sent back as read (GET, edit, PUT); they are ignored.
    """

    name: str | None = Field(default=None, min_length=1, max_length=200)
    group: str | None = Field(default=None, min_length=1, max_length=64)
    prompt: str | None = Field(default=None, min_length=1, max_length=100_000)
    schedule: ScheduleSpec | None = None
    containerConfig: ContainerConfig | None = None
    contextMode: ContextMode | None = None
    enabled: bool | None = Field(default=None, description="false pauses, true resumes")
    timezone: str | None = Field(default=None, max_length=64)
    chatJid: str | None = Field(default=None, max_length=200)
    id: str | None = None
    status: str | None = None
    nextRun: str | None = None
    lastRun: str | None = None
    lastResult: str | None = None
    createdAt: str | None = None
    updatedAt: str | None = None


class Schedule(BaseModel):
    id: str
    name: str
    group: str
    prompt: str
    schedule: ScheduleSpec
    containerConfig: dict[str, Any] | None = Field(
        description="The containerConfig fields this schedule overrides, as given")
    contextMode: ContextMode
    enabled: bool
    timezone: str
    chatJid: str | None
    status: Status
    nextRun: str | None
    lastRun: str | None
    lastResult: str | None = Field(description="The first 200 characters of the last result, or its error")
    createdAt: str
    updatedAt: str


class ScheduleLog(BaseModel):
    id: int
    scheduleId: str
    runAt: str = Field(description="When the run started; for a skipped slot, the slot's time")
    plannedAt: str = Field(description="The slot this row is for")
    durationMs: int | None
    status: LogStatus = Field(description="running until the run finishes")
    catchUp: bool = Field(description="A late run standing in for missed slots (after downtime)")
    result: str | None
    error: str | None
    runId: str | None = Field(description="The run-history entry of this run")
