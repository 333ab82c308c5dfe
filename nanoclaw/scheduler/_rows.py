"""Schedule rows: reading schedules and their log rows into models, adding a log row."""
from __future__ import annotations

import json
import sqlite3
from typing import overload

from nanoclaw.clock import iso
from nanoclaw.store import inserted_id
from nanoclaw.scheduler._model import Schedule, ScheduleLog, ScheduleSpec


@overload
def _sec(ms: int) -> float: ...
@overload
def _sec(ms: int | None) -> float | None: ...


def _sec(ms: int | None) -> float | None:
    return None if ms is None else ms / 1000


def _load(row: sqlite3.Row) -> Schedule:
    value = int(row["schedule_value"]) if row["schedule_type"] == "interval" else row["schedule_value"]
    return Schedule(
        id=row["id"],
        name=row["name"],
        group=row["group_name"],
        prompt=row["prompt"],
        schedule=ScheduleSpec(type=row["schedule_type"], value=value),
        containerConfig=json.loads(row["container_config"]) if row["container_config"] else None,
        contextMode=row["context_mode"],
        enabled=row["status"] != "paused",
        timezone=row["timezone"],
        chatJid=row["chat_jid"],
        status=row["status"],
        nextRun=iso(_sec(row["next_run_ms"])),
        lastRun=iso(_sec(row["last_run_ms"])),
        lastResult=row["last_result"],
        createdAt=iso(row["created_at"]),
        updatedAt=iso(row["updated_at"]),
    )


def _load_log(row: sqlite3.Row) -> ScheduleLog:
    return ScheduleLog(
        id=row["id"],
        scheduleId=row["schedule_id"],
        runAt=iso(_sec(row["run_at_ms"])),
        plannedAt=iso(_sec(row["planned_ms"])),
        durationMs=row["duration_ms"],
        status=row["status"],
        catchUp=bool(row["catch_up"]),
        result=row["result"],
        error=row["error"],
        runId=row["run_id"],
    )


def _add_log(conn: sqlite3.Connection, schedule_id: str, planned_ms: int, run_at_ms: int, status: str, *,
             catch_up: bool = False, error: str | None = None) -> int:
    return inserted_id(conn.execute(
        "INSERT INTO schedule_logs (schedule_id, planned_ms, run_at_ms, status, catch_up, error) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (schedule_id, planned_ms, run_at_ms, status, int(catch_up), error),
    ))
