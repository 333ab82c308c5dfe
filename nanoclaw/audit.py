"""The audit log: one table, one small API every module uses."""
from __future__ import annotations

import json
import logging
import sqlite3
from typing import Any

import trio

from nanoclaw.clock import Clock, iso
from nanoclaw.events import Listeners
from nanoclaw.secrets import SecretBox
from nanoclaw.store import Database, inserted_id

SEVERITIES = ("info", "warning", "violation", "error")
log = logging.getLogger("nanoclaw.audit")


def insert_entry(conn: sqlite3.Connection, ts: float, severity: str, category: str, message: str,
                 group: str | None = None, details_json: str | None = None) -> int:
    """One audit row, inside the caller's transaction (the CLI writes through this too); its id."""
    return inserted_id(conn.execute(
        "INSERT INTO audit_log (ts, severity, category, message, group_name, details) VALUES (?, ?, ?, ?, ?, ?)",
        (ts, severity, category, message, group, details_json),
    ))


def _prune(conn: sqlite3.Connection, before: float, batch: int) -> int:
    return conn.execute(
        "DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_log WHERE ts < ? LIMIT ?)", (before, batch)
    ).rowcount


# Retention pruning: how often, and how many rows one write transaction deletes.
PRUNE_SECONDS = 3600.0
PRUNE_BATCH = 5000


def _parse(details_json: str | None) -> Any:
    try:
        return json.loads(details_json) if details_json else None
    except ValueError:  # redaction broke the JSON: give the text
        return details_json


class Entry:
    """One audit entry, redacted, not yet written (Audit.entry)."""

    def __init__(self, audit: Audit, ts: float, severity: str, category: str, message: str, group: str | None,
                 details_json: str | None) -> None:
        self.audit, self.ts, self.severity, self.category = audit, ts, severity, category
        self.message, self.group, self.details_json = message, group, details_json

    def insert(self, conn: sqlite3.Connection) -> int:
        """Write it inside the caller's transaction (blocking: runs in the write's worker thread)."""
        return insert_entry(conn, self.ts, self.severity, self.category, self.message, self.group, self.details_json)

    def announce(self) -> None:
        """Tell the listeners (live events, metrics) and the log, once the entry is committed."""
        self.audit.listeners({"timestamp": iso(self.ts), "severity": self.severity, "category": self.category,
                              "message": self.message, "group": self.group, "details": _parse(self.details_json)})
        log.log(logging.WARNING if self.severity != "info" else logging.INFO,
                "audit %s %s: %s", self.severity, self.category, self.message)


class Audit:
    def __init__(self, db: Database, clock: Clock, secrets: SecretBox, *, retention_days: int = 90) -> None:
        self.db = db
        self.clock = clock
        self.secrets = secrets
        self.retention_days = retention_days  # 0: keep every entry
        # Called with each entry once stored (live events, metrics).
        self.listeners = Listeners()

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Delete entries older than the retention period at start and then every hour."""
        task_status.started()
        if self.retention_days <= 0:
            return
        while True:
            await self.prune()
            await trio.sleep(PRUNE_SECONDS)

    async def prune(self) -> int:
        before = self.clock.now() - self.retention_days * 86400
        total = 0
        while (deleted := await self.db.write(_prune, before, PRUNE_BATCH)) > 0:
            total += deleted
        if total:
            log.info("audit: removed %d entries older than %d days", total, self.retention_days)
        return total

    async def record(
        self,
        severity: str,
        category: str,
        message: str,
        group: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> int:
        """Write one entry (secrets redacted); its id."""
        entry = self.entry(severity, category, message, group, details)
        row_id = await self.db.write(entry.insert)
        entry.announce()
        return row_id

    def entry(self, severity: str, category: str, message: str, group: str | None = None,
              details: dict[str, Any] | None = None) -> Entry:
        """An entry to write inside the caller's own write transaction (`entry.insert(conn)`, one
        thread hop for the change and its entry, and no entry when the change rolls back); call
        `entry.announce()` once that transaction committed."""
        if severity not in SEVERITIES:
            raise ValueError(f"unknown severity {severity!r}")
        details_json = self.secrets.redact(json.dumps(details)) if details is not None else None
        return Entry(self, self.clock.now(), severity, category, self.secrets.redact(message), group, details_json)

    async def update_details(self, row_id: int, details: dict[str, Any]) -> None:
        """Replace the details of an entry (aggregated entries keep counting)."""
        await self.db.execute("UPDATE audit_log SET details = ? WHERE id = ?",
                              (self.secrets.redact(json.dumps(details)), row_id))

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
