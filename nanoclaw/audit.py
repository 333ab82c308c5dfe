"""The audit log: one table, one small API every module uses."""
from __future__ import annotations

import json
import logging
import sqlite3
from typing import Any

from nanoclaw.clock import Clock, iso
from nanoclaw.events._listeners import Listeners
from nanoclaw.secrets import SecretBox
from nanoclaw.store import Database

SEVERITIES = ("info", "warning", "violation", "error")
log = logging.getLogger("nanoclaw.audit")


def insert_entry(conn: sqlite3.Connection, ts: float, severity: str, category: str, message: str,
                 group: str | None = None, details_json: str | None = None) -> None:
    """One audit row, inside the caller's transaction (the CLI writes through this too)."""
    conn.execute(
        "INSERT INTO audit_log (ts, severity, category, message, group_name, details) VALUES (?, ?, ?, ?, ?, ?)",
        (ts, severity, category, message, group, details_json),
    )


def _parse(details_json: str | None) -> Any:
    try:
        return json.loads(details_json) if details_json else None
    except ValueError:  # redaction broke the JSON: give the text
        return details_json


class Audit:
    def __init__(self, db: Database, clock: Clock, secrets: SecretBox) -> None:
        self.db = db
        self.clock = clock
        self.secrets = secrets
        # Called with each entry once stored (live events, metrics).
        self.listeners = Listeners()

    async def record(
        self,
        severity: str,
        category: str,
        message: str,
        group: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        if severity not in SEVERITIES:
            raise ValueError(f"unknown severity {severity!r}")
        message = self.secrets.redact(message)
        details_json = self.secrets.redact(json.dumps(details)) if details is not None else None
        now = self.clock.now()
        await self.db.write(insert_entry, now, severity, category, message, group, details_json)
        self.listeners({"timestamp": iso(now), "severity": severity, "category": category, "message": message,
                        "group": group, "details": _parse(details_json)})
        log.log(logging.WARNING if severity != "info" else logging.INFO,
                "audit %s %s: %s", severity, category, message)

    async def entries(
        self, *, limit: int, group: str | None = None, severity: str | None = None
    ) -> list[dict[str, Any]]:
        where, params = [], []
        if group is not None:
            where.append("group_name = ?")
            params.append(group)
        if severity is not None:
            where.append("severity = ?")
            params.append(severity)
        sql = "SELECT * FROM audit_log"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        rows = await self.db.fetchall(sql, (*params, limit))
        return [
            {
                "id": row["id"],
                "timestamp": iso(row["ts"]),
                "severity": row["severity"],
                "category": row["category"],
                "message": row["message"],
                "group": row["group_name"],
                "details": json.loads(row["details"]) if row["details"] else None,
            }
            for row in rows
        ]

    async def counts_by_severity(self, since: float | None = None) -> dict[str, int]:
        sql = "SELECT severity, COUNT(*) FROM audit_log"
        params: tuple = ()
        if since is not None:
            sql += " WHERE ts >= ?"
            params = (since,)
        rows = await self.db.fetchall(sql + " GROUP BY severity", params)
        counts = {s: 0 for s in SEVERITIES}
        counts.update({row[0]: row[1] for row in rows})
        return counts
