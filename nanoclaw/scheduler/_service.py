"""The scheduler: schedule records, and one task that fires them on time.

There is no polling loop: `run` sleeps until the earliest nextRun and is woken
early by any change (create, update, delete). A schedule's nextRun is advanced
and its log row written in one transaction *before* the run is handed to the
supervisor, so a crash or restart can never run a slot twice.
"""
from __future__ import annotations

import builtins
import logging
import sqlite3
import uuid
from typing import Any, NoReturn

import trio

from nanoclaw.audit import Audit
from nanoclaw.channels import Outbox
from nanoclaw.clock import Clock
from nanoclaw.errors import Conflict, Invalid, NanoclawError, NotFound, QuotaExceeded
from nanoclaw.events import Listeners
from nanoclaw.models import ContainerConfig
from nanoclaw.namespaces import Namespaces, check_jid
from nanoclaw.scheduler._model import Schedule, ScheduleCreate, ScheduleLog, ScheduleUpdate
from nanoclaw.scheduler._requests import handle_request
from nanoclaw.scheduler._rows import _add_log, _load, _load_log
from nanoclaw.scheduler._timing import Timing, due_slots, first_run, local_timezone, parse
from nanoclaw.store import Database
from nanoclaw.supervisor import RunOutcome, RunSink, Supervisor, Work

log = logging.getLogger("nanoclaw.scheduler")

# A run this late after its slot (downtime, a long stall) is logged as catch-up.
CATCH_UP_AFTER_MS = 10_000
LAST_RESULT_CHARS = 200
LOG_TEXT_CHARS = 10_000
READ_ONLY = {"id", "status", "nextRun", "lastRun", "lastResult", "createdAt", "updatedAt"}


class Scheduler:
    """Fires scheduled tasks. Supports the nursery start protocol: `await nursery.start(scheduler.run)`.

    A slot's run is submitted to the supervisor; its results go to the schedule's chat through
    the outbox (the channel layer's `send(chat_jid, text)`).
    """

    def __init__(self, db: Database, clock: Clock, audit: Audit, namespaces: Namespaces, supervisor: Supervisor,
                 outbox: Outbox, *, timezone: str | None = None, max_per_group: int = 50) -> None:
        self.db = db
        self.max_per_group = max_per_group
        self.clock = clock
        self.audit = audit
        self.namespaces = namespaces
        self.supervisor = supervisor
        self.outbox = outbox
        self.default_timezone = timezone or local_timezone()
        self._changed = trio.Event()
        # Schedules whose run has been handed over and has not finished.
        self._running: set[str] = set()
        # Called with (type, data): fired {latenessMs, ...} / skipped {count, reason, ...} (events, metrics).
        self.listeners = Listeners()

    def _now_ms(self) -> int:
        return round(self.clock.now() * 1000)

    def _wake(self) -> None:
        self._changed.set()

    # -- records -----------------------------------------------------------

    async def list(self, *, limit: int = -1, offset: int = 0, group: str | None = None
                   ) -> tuple[list[Schedule], int]:
        """One page of schedules, oldest first, and how many there are in all."""
        where, params = ("WHERE group_name = ?", (group,)) if group is not None else ("", ())

        def _q(conn):
            total = conn.execute(f"SELECT COUNT(*) FROM schedules {where}", params).fetchone()[0]
            rows = conn.execute(f"SELECT * FROM schedules {where} ORDER BY created_at, id LIMIT ? OFFSET ?",
                                (*params, limit, offset)).fetchall()
            return rows, total

        rows, total = await self.db.read(_q)
        return [_load(r) for r in rows], total

    async def get(self, schedule_id: str) -> Schedule:
        row = await self.db.fetchone("SELECT * FROM schedules WHERE id = ?", (schedule_id,))
        if row is None:
            raise NotFound(f"No schedule with id {schedule_id!r}")
        return _load(row)

    async def _chat_for(self, group: str, chat_jid: str | None, given: bool) -> str | None:
        """The chat results go to: the one given, else the group's first chat. Checks the group exists."""
        namespace = await self.namespaces.get(group)
        if given:
            if chat_jid is not None:
                check_jid(chat_jid)
            return chat_jid
        return namespace.chatJids[0] if namespace.chatJids else None

    async def create(self, data: ScheduleCreate, *, by: str | None = None) -> Schedule:
        timezone = data.timezone or self.default_timezone
        timing = parse(data.schedule.type, data.schedule.value, timezone)
        chat_jid = await self._chat_for(data.group, data.chatJid, "chatJid" in data.model_fields_set)
        now_ms = self._now_ms()
        schedule_id = str(uuid.uuid4())
        override = data.containerConfig.model_dump_json(exclude_unset=True) if data.containerConfig else None

        def _tx(conn):
            self._check_quota(conn, data.group)
            conn.execute(
                "INSERT INTO schedules (id, name, group_name, prompt, schedule_type, schedule_value, timezone, "
                "chat_jid, container_config, context_mode, status, next_run_ms, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (schedule_id, data.name, data.group, data.prompt, timing.type, str(timing.value), timezone,
                 chat_jid, override, data.contextMode, "active" if data.enabled else "paused",
                 first_run(timing, now_ms) if data.enabled else None, now_ms / 1000, now_ms / 1000),
            )
            return _load(conn.execute("SELECT * FROM schedules WHERE id = ?", (schedule_id,)).fetchone())

        created = await self._write_within_quota(_tx, data.group, by)
        self._wake()
        await self.audit.record("info", "config", f"schedule {data.name!r} created", group=data.group,
                                details={"scheduleId": schedule_id, "by": by or "api"})
        return created

    async def update(self, schedule_id: str, data: ScheduleUpdate, *, by: str | None = None) -> Schedule:
        current = await self.get(schedule_id)
        if data.id is not None and data.id != schedule_id:
            raise Invalid("id is read-only")
        given = data.model_fields_set - READ_ONLY
        group = data.group or current.group
        spec = data.schedule or current.schedule
        timezone = data.timezone or current.timezone
        timing = parse(spec.type, spec.value, timezone)
        if group != current.group or "chatJid" in given:
            chat_jid = await self._chat_for(group, data.chatJid, "chatJid" in given)
        else:
            chat_jid = current.chatJid
        columns: dict[str, Any] = {
            "name": data.name or current.name,
            "group_name": group,
            "prompt": data.prompt or current.prompt,
            "schedule_type": timing.type,
            "schedule_value": str(timing.value),
            "timezone": timezone,
            "chat_jid": chat_jid,
            "context_mode": data.contextMode or current.contextMode,
        }
        if "containerConfig" in given:
            columns["container_config"] = (data.containerConfig.model_dump_json(exclude_unset=True)
                                           if data.containerConfig else None)
        enabled = current.enabled if data.enabled is None else data.enabled
        timing_changed = (timing.type, timing.value, timezone) != (
            current.schedule.type, current.schedule.value, current.timezone)
        now_ms = self._now_ms()
        if not enabled:
            columns.update(status="paused", next_run_ms=None)
        elif timing_changed or current.status == "paused":
            columns.update(status="active", next_run_ms=first_run(timing, now_ms))
        # Otherwise status and nextRun stay as they are: the scheduler may have
        # advanced nextRun since `current` was read.
        columns["updated_at"] = now_ms / 1000

        def _tx(conn):
            if group != current.group:
                self._check_quota(conn, group)
            assignments = ", ".join(f"{name} = ?" for name in columns)
            changed = conn.execute(f"UPDATE schedules SET {assignments} WHERE id = ?",
                                   (*columns.values(), schedule_id)).rowcount
            if not changed:
                raise NotFound(f"No schedule with id {schedule_id!r}")
            return _load(conn.execute("SELECT * FROM schedules WHERE id = ?", (schedule_id,)).fetchone())

        updated = await self._write_within_quota(_tx, group, by)
        self._wake()
        await self.audit.record("info", "config", f"schedule {updated.name!r} updated", group=updated.group,
                                details={"scheduleId": schedule_id, "fields": sorted(given), "by": by or "api"})
        return updated

    def _check_quota(self, conn: sqlite3.Connection, group: str) -> None:
        count = conn.execute("SELECT COUNT(*) FROM schedules WHERE group_name = ?", (group,)).fetchone()[0]
        if count >= self.max_per_group:
            raise QuotaExceeded(f"group {group!r} already has {count} schedules, its quota "
                                f"(NANOCLAW_MAX_SCHEDULES_PER_GROUP={self.max_per_group}); delete one first",
                                details={"group": group, "limit": self.max_per_group})

    async def _write_within_quota(self, tx, group: str, by: str | None):
        try:
            return await self.db.write(tx)
        except QuotaExceeded as exc:
            await self.audit.record("warning", "quota", f"schedule refused: {exc.message}", group=group,
                                    details={"by": by or "api", "limit": self.max_per_group})
            raise

    async def delete(self, schedule_id: str, *, by: str | None = None) -> None:
        current = await self.get(schedule_id)
        if not await self.db.execute("DELETE FROM schedules WHERE id = ?", (schedule_id,)):
            raise NotFound(f"No schedule with id {schedule_id!r}")
        self._wake()
        await self.audit.record("info", "config", f"schedule {current.name!r} deleted", group=current.group,
                                details={"scheduleId": schedule_id, "by": by or "api"})

    async def run_now(self, schedule_id: str, *, by: str | None = None) -> Schedule:
        """Make an active schedule due now: it fires at once (a run in progress makes it a skipped slot)."""
        current = await self.get(schedule_id)
        if current.status != "active":
            raise Conflict(f"Schedule {current.name!r} is {current.status}: resume it first")
        await self.db.execute("UPDATE schedules SET next_run_ms = ? WHERE id = ? AND status = 'active'",
                              (self._now_ms(), schedule_id))
        self._wake()
        await self.audit.record("info", "config", f"schedule {current.name!r} run now", group=current.group,
                                details={"scheduleId": schedule_id, "by": by or "api"})
        return await self.get(schedule_id)

    async def logs(self, schedule_id: str, *, limit: int, offset: int) -> tuple[builtins.list[ScheduleLog], int]:
        """Newest first, and the total number of rows."""
        await self.get(schedule_id)

        def _q(conn):
            rows = conn.execute("SELECT * FROM schedule_logs WHERE schedule_id = ? ORDER BY id DESC "
                                "LIMIT ? OFFSET ?", (schedule_id, limit, offset)).fetchall()
            total = conn.execute("SELECT COUNT(*) FROM schedule_logs WHERE schedule_id = ?",
                                 (schedule_id,)).fetchone()[0]
            return [_load_log(r) for r in rows], total

        return await self.db.read(_q)

    # -- requests from inside a container ------------------------------------

    async def handle_ipc(self, group: str, is_main: bool, request: dict) -> None:
        """A schedule_task / pause_task / resume_task / cancel_task request from `group`'s container."""
        await handle_request(self, group, is_main, request)

    # -- firing ----------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> NoReturn:
        """Fire schedules until cancelled (nursery start protocol)."""
        await self.db.execute(
            "UPDATE schedule_logs SET status = 'error', error = 'the server stopped before the run finished' "
            "WHERE status = 'running'")
        async with trio.open_nursery() as runs:
            task_status.started()
            while True:
                # A fresh event before reading, so a change made while we read still wakes us.
                self._changed = changed = trio.Event()
                earliest = await self.db.fetchone(
                    "SELECT MIN(next_run_ms) FROM schedules WHERE status = 'active'")
                assert earliest is not None  # an aggregate always gives a row
                if earliest[0] is None:
                    await changed.wait()
                else:
                    with trio.move_on_at(self.clock.to_trio(earliest[0] / 1000)):
                        await changed.wait()
                await self._fire_due(runs)

    async def _fire_due(self, runs: trio.Nursery) -> None:
        now_ms = self._now_ms()
        rows = await self.db.fetchall(
            "SELECT * FROM schedules WHERE status = 'active' AND next_run_ms <= ? ORDER BY next_run_ms",
            (now_ms,))
        for row in rows:
            schedule = _load(row)
            timing = parse(schedule.schedule.type, schedule.schedule.value, schedule.timezone)
            log_id = await self._advance(schedule, timing, row["next_run_ms"], now_ms)
            if log_id is not None:
                self._running.add(schedule.id)
                runs.start_soon(self._run, schedule, log_id)

    async def _advance(self, schedule: Schedule, timing: Timing, planned_ms: int, now_ms: int) -> int | None:
        """Move nextRun past now and log the slots; returns the log row of the run to start, if any."""
        slots, more, next_ms = due_slots(timing, planned_ms, now_ms)
        busy = schedule.id in self._running
        catch_up = len(slots) > 1 or more or now_ms - planned_ms > CATCH_UP_AFTER_MS
        skipped: list[int] = []  # how many slots the transaction skipped

        def _tx(conn):
            current = conn.execute("SELECT status, next_run_ms FROM schedules WHERE id = ?",
                                   (schedule.id,)).fetchone()
            if current is None or current["status"] != "active" or current["next_run_ms"] != planned_ms:
                return None  # changed since we looked; the next pass sees the new state
            conn.execute(
                "UPDATE schedules SET next_run_ms = ?, status = ?, last_run_ms = COALESCE(?, last_run_ms) "
                "WHERE id = ?",
                (next_ms, "completed" if next_ms is None else "active", None if busy else now_ms, schedule.id))
            missed = slots if busy else slots[1:]
            skipped.append(len(missed))
            reason = ("the previous run of this schedule was still going" if busy
                      else "missed while the server was not running; one catch-up run was made")
            for slot in missed:
                _add_log(conn, schedule.id, slot, slot, "skipped", error=reason)
            if more:
                _add_log(conn, schedule.id, missed[-1] if missed else planned_ms, now_ms, "skipped",
                         error="further missed slots were not listed")
            if busy:
                return None
            return _add_log(conn, schedule.id, planned_ms, now_ms, "running", catch_up=catch_up)

        log_id = await self.db.write(_tx)
        about = {"scheduleId": schedule.id, "name": schedule.name, "group": schedule.group}
        if skipped and skipped[0]:
            self.listeners("skipped", {**about, "count": skipped[0],
                                       "reason": "busy" if busy else "missed while the server was not running"})
        if log_id is not None:
            self.listeners("fired", {**about, "latenessMs": now_ms - planned_ms, "catchUp": catch_up})
        return log_id

    async def _run(self, schedule: Schedule, log_id: int) -> None:
        try:
            outcome = await self._hand_over(schedule, log_id)
        finally:
            self._running.discard(schedule.id)
        status = {"success": "success", "timeout": "timeout"}.get(outcome.status, "error")
        result = outcome.result[:LOG_TEXT_CHARS] if outcome.result is not None else None
        error = outcome.error or (None if status == "success" else f"run ended: {outcome.status}")
        summary = (result if status == "success" else error) or ""

        def _tx(conn):
            conn.execute(
                "UPDATE schedule_logs SET status = ?, duration_ms = ?, result = ?, error = ?, "
                "run_id = COALESCE(?, run_id) WHERE id = ?",
                (status, outcome.duration_ms, result, error, outcome.run_id or None, log_id))
            conn.execute("UPDATE schedules SET last_result = ? WHERE id = ?",
                         (summary[:LAST_RESULT_CHARS], schedule.id))

        await self.db.write(_tx)

    async def _hand_over(self, schedule: Schedule, log_id: int) -> RunOutcome:
        """Give the run to the supervisor and wait for its outcome; failures become an error outcome."""
        started = self._now_ms()

        def failed(message: str) -> RunOutcome:
            return RunOutcome(run_id="", status="error", result=None, error=message,
                              duration_ms=self._now_ms() - started)

        try:
            namespace = await self.namespaces.get(schedule.group)
            config = None
            if schedule.containerConfig:
                config = ContainerConfig.model_validate(
                    namespace.containerConfig.model_dump() | schedule.containerConfig)
            work = Work(schedule.prompt, kind="task", sink=_ScheduleSink(self, schedule), chat_jid=schedule.chatJid,
                        group_session=schedule.contextMode == "group", container_config=config,
                        schedule_id=schedule.id, priority=0)
            handle = await self.supervisor.submit(schedule.group, work)
            await self.db.execute("UPDATE schedule_logs SET run_id = ? WHERE id = ?", (handle.run_id, log_id))
            return await handle.wait()
        except NanoclawError as error:
            return failed(error.message)
        except Exception as error:  # the supervisor's bug must not stop every other schedule
            log.exception("schedule %s: handing the run over failed", schedule.id)
            await self.audit.record("error", "scheduler", f"schedule {schedule.name!r} could not run: {error}",
                                    group=schedule.group, details={"scheduleId": schedule.id})
            return failed(f"could not start the run: {error}")

    async def _deliver(self, schedule: Schedule, text: str) -> None:
        if schedule.chatJid is None:
            return
        try:
            await self.outbox.send(schedule.chatJid, text)
        except Exception as error:  # a chat that cannot be reached must not fail the run
            log.warning("schedule %s: sending a result to %s failed: %s", schedule.id, schedule.chatJid, error)
            await self.audit.record("warning", "scheduler",
                                    f"result of schedule {schedule.name!r} not delivered to {schedule.chatJid}",
                                    group=schedule.group, details={"scheduleId": schedule.id, "error": str(error)})


class _ScheduleSink(RunSink):
    """A slot's results go to the schedule's chat (if it names one)."""

    def __init__(self, scheduler: Scheduler, schedule: Schedule) -> None:
        self.scheduler = scheduler
        self.schedule = schedule

    async def result(self, run, text: str) -> None:
        await self.scheduler._deliver(self.schedule, text)
