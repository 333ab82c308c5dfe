"""Run history and group sessions: what the supervisor records of each run, and reading it back
(lists, one run, aggregates)."""
from __future__ import annotations

import json
import secrets
import sqlite3

from nanoclaw.clock import iso
from nanoclaw.store import Database
from nanoclaw.supervisor._usage import FIELDS, TOTAL_SQL, row_usage, usage_dict


def run_record(row: sqlite3.Row) -> dict:
    results = json.loads(row["results"] or "[]")
    return {
        "runId": row["id"],
        "group": row["group_name"],
        "kind": row["kind"],
        "status": row["status"],
        "containerName": row["container_name"],
        "sessionId": row["session_id"],
        "scheduleId": row["schedule_id"],
        "startedAt": iso(row["started_at"]),
        "finishedAt": iso(row["finished_at"]),
        "durationMs": row["duration_ms"],
        "exitCode": row["exit_code"],
        "results": results,
        "result": results[-1] if results else None,
        "error": row["error"],
        "usage": row_usage(row),
        "model": row["model"],
    }


async def list_runs(db: Database, *, limit: int, group: str | None = None) -> list[dict]:
    sql, params = "SELECT * FROM run_history", []
    if group is not None:
        sql += " WHERE group_name = ?"
        params.append(group)
    sql += " ORDER BY started_at DESC, rowid DESC LIMIT ?"
    rows = await db.fetchall(sql, (*params, limit))
    return [run_record(r) for r in rows]


async def get_run(db: Database, run_id: str) -> dict | None:
    row = await db.fetchone("SELECT * FROM run_history WHERE id = ?", (run_id,))
    return run_record(row) if row else None


async def runs_since(db: Database, since: float) -> int:
    row = await db.fetchone("SELECT COUNT(*) FROM run_history WHERE started_at >= ?", (since,))
    assert row is not None  # an aggregate always gives a row
    return row[0]


_TOKEN_SUMS = ", ".join(f"SUM({column})" for _, column in FIELDS)


def _analytics(conn: sqlite3.Connection, since: float) -> dict:
    per_day = [
        {"date": r[0], "runs": r[1], "success": r[2], "failed": r[3], "usage": usage_dict(r[4:])}
        for r in conn.execute(
            "SELECT date(started_at, 'unixepoch') AS day, COUNT(*), "
            "SUM(status = 'success'), SUM(status IN ('error', 'timeout', 'interrupted')), "
            f"{_TOKEN_SUMS} FROM run_history WHERE started_at >= ? GROUP BY day ORDER BY day", (since,))
    ]
    per_group = [
        {"group": r[0], "runs": r[1], "usage": usage_dict(r[2:])}
        for r in conn.execute(
            f"SELECT group_name, COUNT(*), {_TOKEN_SUMS} FROM run_history WHERE started_at >= ? "
            f"GROUP BY group_name ORDER BY SUM({TOTAL_SQL}) DESC, group_name", (since,))
    ]
    finished = [r[0] for r in conn.execute(
        "SELECT duration_ms FROM run_history WHERE started_at >= ? AND duration_ms IS NOT NULL "
        "ORDER BY duration_ms", (since,))]
    total = sum(d["runs"] for d in per_day)
    succeeded = sum(d["success"] for d in per_day)
    ended = sum(d["success"] + d["failed"] for d in per_day)
    return {
        "days": len(per_day),
        "totalRuns": total,
        "runsPerDay": per_day,
        "tokensPerGroup": per_group,
        "usage": usage_dict(sum(d["usage"][name] for d in per_day) for name, _ in FIELDS),
        "successRate": round(succeeded / ended, 4) if ended else None,
        "averageDurationMs": round(sum(finished) / len(finished)) if finished else None,
        "p95DurationMs": finished[min(len(finished) - 1, int(0.95 * len(finished)))] if finished else None,
    }


async def analytics(db: Database, since: float) -> dict:
    return await db.read(_analytics, since)


# -- what the supervisor records ------------------------------------------------


async def load_instance_id(db: Database) -> str:
    def _tx(conn):
        row = conn.execute("SELECT value FROM settings WHERE key = 'instance_id'").fetchone()
        if row:
            return row[0]
        value = secrets.token_hex(8)
        conn.execute("INSERT INTO settings (key, value) VALUES ('instance_id', ?)", (value,))
        return value

    return await db.write(_tx)


async def mark_interrupted(db: Database, now: float) -> None:
    """Runs still 'running' at start-up were cut short by the last stop (or crash)."""
    await db.execute(
        "UPDATE run_history SET status = 'interrupted', finished_at = ?, "
        "error = 'the server stopped during this run' WHERE status = 'running'",
        (now,),
    )


async def stored_session(db: Database, group: str) -> str | None:
    row = await db.fetchone("SELECT session_id FROM group_sessions WHERE group_name = ?", (group,))
    return row[0] if row else None


async def forget_group_session(db: Database, group: str) -> None:
    await db.execute("DELETE FROM group_sessions WHERE group_name = ?", (group,))


async def save_group_session(db: Database, group: str, session_id: str, now: float) -> None:
    await db.execute(
        "INSERT INTO group_sessions VALUES (?, ?, ?) ON CONFLICT (group_name) DO UPDATE "
        "SET session_id = excluded.session_id, updated_at = excluded.updated_at",
        (group, session_id, now))


async def insert_run(db: Database, run_id: str, group: str, kind: str, container_name: str, session_id: str,
                     schedule_id: str | None, prompt: str, started: float) -> None:
    await db.execute(
        "INSERT INTO run_history (id, group_name, kind, status, container_name, session_id, "
        "schedule_id, prompt, started_at) VALUES (?, ?, ?, 'running', ?, ?, ?, ?, ?)",
        (run_id, group, kind, container_name, session_id, schedule_id, prompt, started),
    )


async def set_run_session(db: Database, run_id: str, session_id: str) -> None:
    await db.execute("UPDATE run_history SET session_id = ? WHERE id = ?", (session_id, run_id))


async def set_run_results(db: Database, run_id: str, results: list[str]) -> None:
    await db.execute("UPDATE run_history SET results = ? WHERE id = ?", (json.dumps(results), run_id))


async def finish_run(db: Database, run_id: str, *, status: str, finished: float, duration_ms: int,
                     exit_code: int | None, results: list[str], error: str | None) -> None:
    await db.execute(
        "UPDATE run_history SET status = ?, finished_at = ?, duration_ms = ?, exit_code = ?, "
        "results = ?, error = ? WHERE id = ?",
        (status, finished, duration_ms, exit_code, json.dumps(results), error, run_id),
    )
