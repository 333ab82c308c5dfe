"""Scheduled tasks: cron, interval and once schedules that fire on time and survive restarts."""
from nanoclaw.scheduler._model import Schedule, ScheduleCreate, ScheduleLog, ScheduleSpec, ScheduleUpdate
from nanoclaw.scheduler._service import Scheduler

__all__ = ["Schedule", "ScheduleCreate", "ScheduleLog", "ScheduleSpec", "ScheduleUpdate", "Scheduler"]
