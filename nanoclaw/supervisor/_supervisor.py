from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import NoReturn

import trio

from nanoclaw.audit import Audit
from nanoclaw.broadcast import Broadcast
from nanoclaw.clock import Clock
from nanoclaw.config import Settings
from nanoclaw.errors import Invalid
from nanoclaw.events import Listeners
from nanoclaw.ipc import write_close, write_follow_up
from nanoclaw.namespaces import Namespaces
from nanoclaw.proxy import CredentialProxy
from nanoclaw.runtime import InternalNetwork, Runtime, RuntimeUnavailable
from nanoclaw.security.mounts import MountPolicy
from nanoclaw.store import Database
from nanoclaw.supervisor._history import forget_group_session, load_instance_id, mark_interrupted
from nanoclaw.supervisor._queue import ActiveRun, GroupQueue
from nanoclaw.supervisor._run import SESSION_RE, RunLife
from nanoclaw.supervisor._types import (QueueStatistics, RunEvent, RunEventType, RunHandle, RunListener, RunOutcome,
                                        Work, WorkFeed)

log = logging.getLogger("nanoclaw.supervisor")

__all__ = ["ActiveRun", "Supervisor"]


class Supervisor(RunLife):
    """Per-group queues under one global CapacityLimiter; one container per group at a time.

    Work comes submitted (`submit`) or from the feed (`notify`); each run reports to its work's
    sink, and every run's events go to subscribers. `await nursery.start(supervisor.run)`;
    cancelling it stops every container by name.
    """

    def __init__(self, settings: Settings, db: Database, clock: Clock, audit: Audit,
                 namespaces: Namespaces, mounts: MountPolicy, runtime: Runtime, proxy: CredentialProxy,
                 feed: WorkFeed, *, offload=None) -> None:
        self.settings = settings
        self.db = db
        self.clock = clock
        self.audit = audit
        self.namespaces = namespaces
        self.mounts = mounts
        self.runtime = runtime
        self.proxy = proxy
        self.feed = feed
        # File work runs in a thread; tests of timing may run it inline (see Database).
        self.offload = offload or trio.to_thread.run_sync
        self.limiter = trio.CapacityLimiter(settings.max_concurrent)
        self.queues: dict[str, GroupQueue] = {}
        self.queued_runs: dict[str, tuple[str, str]] = {}
        self.instance_id = settings.instance_id
        # Synchronous methods start tasks by sending them here; run() starts them in its nursery.
        self._spawn_send, self._spawn_receive = trio.open_memory_channel[tuple[Callable, tuple]](math.inf)
        self._running = False
        self._orphans_removed = False
        self._run_started = Broadcast()
        # Called with (group, ActiveRun) when a run ends, so the IPC watcher can sweep its folder.
        self.run_finished_listeners: list = []
        # Called likewise before a result is delivered: what the agent sent meanwhile goes first.
        self.before_result_listeners: list = []
        self._listeners = Listeners()  # of RunEvents; one that raises is logged, the run goes on
        # Made on the first "proxy-only" run, removed at shutdown.
        self.internal_network = InternalNetwork(runtime)
        self.disk_mb: dict[str, float] = {}  # group -> its folders' size when last measured
        # Called with statistics() when maxConcurrent changes (live events).
        self.limit_listeners = Listeners()

    # -- lifecycle --------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> NoReturn:
        self.instance_id = self.instance_id or await load_instance_id(self.db)
        saved = await self.db.get_setting("max_concurrent")
        if saved:
            self.limiter.total_tokens = int(saved)
        await mark_interrupted(self.db, self.clock.now())
        await self.remove_orphans()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._start_spawned, nursery)
            self._running = True
            task_status.started()
            # Work that waited in the feed over a restart (or a crash) is not lost.
            for ns in await self.namespaces.list():
                self.notify(ns.name)
            try:
                await trio.sleep_forever()
            finally:
                await self.internal_network.remove()

    def _spawn(self, fn: Callable, *args) -> None:
        self._spawn_send.send_nowait((fn, args))

    async def _start_spawned(self, nursery: trio.Nursery) -> None:
        async for fn, args in self._spawn_receive:
            nursery.start_soon(fn, *args)

    async def remove_orphans(self) -> list[str]:
        """Remove containers this instance started in an earlier life (once the engine answers)."""
        if not self.runtime.state.available or self._orphans_removed:
            return []
        self._orphans_removed = True
        try:
            removed = await self.runtime.remove_labelled(f"nanoclaw.instance={self.instance_id}")
        except RuntimeUnavailable as exc:
            log.warning("could not look for orphan containers: %s", exc)
            return []
        if removed:
            await self.audit.record("warning", "container", f"removed {len(removed)} orphan container(s)",
                                    details={"containers": removed})
        return removed

    # -- run events -----------------------------------------------------------

    def subscribe(self, listener: RunListener) -> None:
        """Call listener with every RunEvent from now on (it must not block)."""
        self._listeners.add(listener)

    def _emit(self, type_: RunEventType, run_id: str, group: str, kind: str, chat_jid: str | None,
              data: dict | None = None) -> None:
        self._listeners(RunEvent(type_, run_id, group, kind, chat_jid, data or {}))

    # -- submitting work ----------------------------------------------------

    def _queue(self, group: str) -> GroupQueue:
        queue = self.queues.get(group)
        if queue is None:
            queue = self.queues[group] = GroupQueue(group)
        return queue

    def notify(self, group: str) -> None:
        """The feed has work for group: offer it to the group's live container, or queue the group."""
        queue = self._queue(group)
        active = queue.active
        if active is not None and active.fed and not active.closing and self._running:
            self._spawn(self._feed_live, queue)
            return
        queue.fed = True
        self._ensure_runner(queue)
        if active is not None and self._running:
            self._spawn(self._make_way, queue)

    async def submit(self, group: str, work: Work) -> RunHandle:
        """Queue work for group (before whatever the feed has); `await handle.wait()` for its outcome."""
        await self.namespaces.get(group)
        if work.session_id is not None and not SESSION_RE.match(work.session_id):
            raise Invalid("sessionId must be 1-64 letters, digits, '_' or '-'")
        queue = self._queue(group)
        queue.add(work)
        self.queued_runs[work.handle.run_id] = (group, work.kind)
        self._emit("queued", work.handle.run_id, group, work.kind, work.chat_jid)
        await self._make_way(queue)
        self._ensure_runner(queue)
        return work.handle

    async def new_session(self, group: str) -> None:
        """Forget the group's session (a chat's /new); a live container keeping it closes.
        The next run starts a fresh session."""
        await forget_group_session(self.db, group)
        queue = self.queues.get(group)
        active = queue.active if queue else None
        if active is not None and active.group_session:
            active.group_session = False  # what it reports from now on is the old session
            if not active.closing:
                await self._write_close(active)
        await self.audit.record("info", "session", f"{group} started a new session", group=group)

    def set_max_concurrent(self, value: int) -> None:
        """Takes effect at once: raising it starts waiting groups now."""
        if not 1 <= value <= 64:
            raise Invalid("maxConcurrent must be between 1 and 64")
        self.limiter.total_tokens = value
        self.limit_listeners(self.statistics())

    async def save_max_concurrent(self, value: int) -> None:
        self.set_max_concurrent(value)
        await self.db.set_setting("max_concurrent", str(value))
        await self.audit.record("info", "config", f"maxConcurrent set to {value}")

    def _ensure_runner(self, queue: GroupQueue) -> None:
        queue.poke()
        if not queue.runner and self._running:
            queue.runner = True
            self._spawn(self._serve_group, queue)

    # -- live container input ------------------------------------------------

    def live_run(self, group: str, session_id: str | None = None) -> ActiveRun | None:
        queue = self.queues.get(group)
        active = queue.active if queue else None
        if active is None or (session_id is not None and active.session_id != session_id):
            return None
        return active

    def active_runs(self) -> list[tuple[str, ActiveRun]]:
        return [(name, q.active) for name, q in self.queues.items() if q.active is not None]

    async def wait_active(self) -> None:
        """Return once any container is live (at once if one is)."""
        while not self.active_runs():
            await self._run_started.wait()

    async def _feed_live(self, queue: GroupQueue) -> None:
        async with queue.pipe_lock:
            active = queue.active
            if active is None or not active.fed or active.closing:
                queue.fed = True
                self._ensure_runner(queue)
                return

            async def write(text: str, attachments: list) -> None:
                await write_follow_up(active.ipc_dir, text, audit=self.audit, offload=self.offload,
                                      attachments=attachments)
                active.idle = False

            if await self.feed.follow_up(active, write) == "own container":
                queue.fed = True
                self._ensure_runner(queue)
                await self._make_way(queue)

    async def _write_close(self, active: ActiveRun) -> None:
        active.closing = True
        await write_close(self.audit, active.group, active.ipc_dir, offload=self.offload)

    async def _make_way(self, queue: GroupQueue) -> None:
        """Work waits for the group's slot: an idle container must not hold it until its idle timeout."""
        active = queue.active
        if active is not None and active.idle and not active.closing:
            await self._write_close(active)

    def _close_after_turn(self, active: ActiveRun) -> bool:
        """Once a turn is done, close the container at once instead of waiting for follow-ups?"""
        if not active.fed:
            return True  # only work from the feed receives follow-ups
        queue = self.queues.get(active.group)
        return queue is not None and queue.has_work()

    # -- the per-group runner -------------------------------------------------

    async def _serve_group(self, queue: GroupQueue) -> None:
        try:
            while queue.has_work():
                if queue.retry_at is not None and not queue.pending:
                    with trio.move_on_at(self.clock.to_trio(queue.retry_at)):
                        await queue.changed.wait()
                    if self.clock.now() < queue.retry_at and not queue.pending:
                        continue
                queue.waiting = True
                async with self.limiter:
                    queue.waiting = False
                    work, fed = await self._next_work(queue)
                    if work is not None:
                        await self._execute(queue, work, fed)
        finally:
            queue.runner = False
            queue.waiting = False

    async def _next_work(self, queue: GroupQueue) -> tuple[Work | None, bool]:
        """The work to run next, and whether it came from the feed."""
        if queue.pending:
            return queue.pending.pop(0), False
        queue.fed = False
        work = await self.feed.next_work(queue.name)
        if work is None:
            queue.retry_at = None
        return work, True

    async def _execute(self, queue: GroupQueue, work: Work, fed: bool) -> None:
        group = queue.name
        started = self.clock.now()
        outcome = None
        try:
            ns = await self.namespaces.find(group)
            if ns is None:
                outcome = RunOutcome(work.handle.run_id, "error", None, f"namespace {group} no longer exists", 0)
                return
            outcome = await self._run(queue, work, ns, started, fed)
        except Exception as exc:  # a bug in one run must not take the server down
            log.exception("run %s of %s failed", work.handle.run_id, group)
            await self.audit.record("error", "container", f"run failed unexpectedly: {exc!r}", group=group)
            outcome = RunOutcome(work.handle.run_id, "error", None, f"internal error: {exc!r}", 0)
        finally:
            self.queued_runs.pop(work.handle.run_id, None)
            if outcome is None:
                outcome = RunOutcome(work.handle.run_id, "cancelled", None, "the server stopped", 0)
            work.handle.finish(outcome)

    # -- statistics -------------------------------------------------------------

    def statistics(self) -> QueueStatistics:
        running = sum(1 for q in self.queues.values() if q.active is not None)
        queued = sum(1 for q in self.queues.values() if q.active is None and q.has_work())
        return QueueStatistics(running=running, queued=queued, total=running + queued,
                               max_concurrent=int(self.limiter.total_tokens))

    def group_state(self, group: str) -> dict:
        queue = self.queues.get(group) or GroupQueue(group)
        active = queue.active
        return {
            "group": group,
            "active": active is not None,
            "idle": bool(active and active.idle),
            "containerKind": active.kind if active else None,
            "containerName": active.container_name if active else None,
            "sessionId": active.session_id if active else None,
            "startedAt": active.started_at if active else None,
            "waitingForSlot": queue.waiting,
            "pendingMessages": queue.fed,
            "pendingTasks": sum(1 for work in queue.pending if work.kind == "task"),
            "pendingRuns": sum(1 for work in queue.pending if work.kind != "task"),
            "retryCount": queue.retries,
            "nextRetryAt": queue.retry_at,
            "diskMb": self.disk_mb.get(group),
        }
