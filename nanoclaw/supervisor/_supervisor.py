from __future__ import annotations

import json
import logging
import os
import re
import secrets
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import trio

from nanoclaw.audit import Audit
from nanoclaw.clock import Clock, local_timezone
from nanoclaw.config import Settings
from nanoclaw.errors import Invalid, NanoclawError
from nanoclaw.ipc._tree import prepare_audited, write_input_audited
from nanoclaw.models import ContainerConfig
from nanoclaw.namespaces import GLOBAL, Namespaces
from nanoclaw.runtime import (InternalNetwork, Runtime, RuntimeUnavailable, container_user, give_to_container,
                              hardening_args)
from nanoclaw.security.mounts import MountPolicy
from nanoclaw.store import Database
from nanoclaw.supervisor._agent import agent_settings
from nanoclaw.supervisor._output import FrameParser, OutputTooLarge
from nanoclaw.supervisor._quota import DiskQuotaExceeded, check_disk
from nanoclaw.supervisor._types import (MessageBatch, MessageSource, RunEvent, RunHandle, RunListener, RunOutcome,
                                       TaskRequest)
from nanoclaw.supervisor._usage import RunRefused, Usage, budget_refusal, save_usage

log = logging.getLogger("nanoclaw.supervisor")

RETRY_DELAYS = (5, 10, 20, 40, 80)
# What `docker run` / `podman run` exit with when the engine, not the container, failed.
ENGINE_ERROR_EXIT = 125
STDERR_CAP = 10 * 1024 * 1024
SESSION_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
INTERNAL_RE = re.compile(r"<internal>.*?</internal>", re.S)
Kind = Literal["message", "task", "adhoc"]
NEW_SESSION_TEXT = "Started a new session: earlier messages are forgotten."


def strip_internal(text: str) -> str:
    return INTERNAL_RE.sub("", text).strip()


def new_id() -> str:
    return uuid.uuid4().hex


@dataclass
class Work:
    kind: Kind
    handle: RunHandle
    prompt: str = ""
    task: TaskRequest | None = None
    batch: MessageBatch | None = None
    # An on-demand run's named session (else it gets a fresh one).
    session_id: str | None = None


@dataclass
class ActiveRun:
    group: str
    run_id: str
    kind: Kind
    container_name: str
    session_id: str
    ipc_dir: Path
    started_at: float
    chat_jid: str | None
    is_main: bool
    idle: bool = False
    closing: bool = False
    # Continues (and updates) the group's stored session; /new turns this off.
    group_session: bool = False


@dataclass
class GroupQueue:
    name: str
    tasks: deque = field(default_factory=deque)
    adhoc: deque = field(default_factory=deque)
    messages: bool = False
    active: ActiveRun | None = None
    runner: bool = False
    waiting: bool = False
    retries: int = 0
    retry_at: float | None = None
    changed: trio.Event = field(default_factory=trio.Event)
    pipe_lock: trio.Lock = field(default_factory=trio.Lock)

    def has_work(self) -> bool:
        return bool(self.tasks or self.adhoc or self.messages)

    def poke(self) -> None:
        self.changed.set()
        self.changed = trio.Event()


class Supervisor:
    """Per-group queues under one global CapacityLimiter; one container per group at a time.

    `await nursery.start(supervisor.run)`; cancelling it stops every container by name.
    """

    def __init__(self, settings: Settings, db: Database, clock: Clock, audit: Audit,
                 namespaces: Namespaces, mounts: MountPolicy, runtime: Runtime, *,
                 proxy=None, messages: MessageSource | None = None, offload=None) -> None:
        self.settings = settings
        self.db = db
        self.clock = clock
        self.audit = audit
        self.namespaces = namespaces
        self.mounts = mounts
        self.runtime = runtime
        self.proxy = proxy
        self.messages = messages
        # File work runs in a thread; tests of timing may run it inline (see Database).
        self.offload = offload or trio.to_thread.run_sync
        self.limiter = trio.CapacityLimiter(settings.max_concurrent)
        self.queues: dict[str, GroupQueue] = {}
        self.queued_runs: dict[str, tuple[str, Kind]] = {}
        self.instance_id = settings.instance_id
        self._nursery: trio.Nursery | None = None
        self._orphans_removed = False
        self._run_started = trio.Event()
        # Called with (group, ActiveRun) when a run ends, so the IPC watcher can sweep its folder.
        self.run_finished_listeners: list = []
        # Called likewise before a result is delivered: what the agent sent meanwhile goes first.
        self.before_result_listeners: list = []
        self._listeners: list[RunListener] = []
        # Made on the first "proxy-only" run, removed at shutdown.
        self.internal_network = InternalNetwork(runtime)
        self.disk_mb: dict[str, float] = {}  # group -> its folder's size when last measured

    # -- lifecycle --------------------------------------------------------

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        self.instance_id = self.instance_id or await self._load_instance_id()
        saved = await self.db.fetchone("SELECT value FROM settings WHERE key = 'max_concurrent'")
        if saved:
            self.limiter.total_tokens = int(saved[0])
        await self.db.execute(
            "UPDATE run_history SET status = 'interrupted', finished_at = ?, "
            "error = 'the server stopped during this run' WHERE status = 'running'",
            (self.clock.now(),),
        )
        await self.remove_orphans()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            if self.messages is not None:
                # Messages that arrived before a restart (or during a crash) are not lost.
                for ns in await self.namespaces.list():
                    self.notify_messages(ns.name)
            try:
                await trio.sleep_forever()
            finally:
                await self.internal_network.remove()

    async def _load_instance_id(self) -> str:
        def _tx(conn):
            row = conn.execute("SELECT value FROM settings WHERE key = 'instance_id'").fetchone()
            if row:
                return row[0]
            value = secrets.token_hex(8)
            conn.execute("INSERT INTO settings (key, value) VALUES ('instance_id', ?)", (value,))
            return value

        return await self.db.write(_tx)

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
        self._listeners.append(listener)

    def _emit(self, type_: str, run_id: str, group: str, kind: str, chat_jid: str | None,
              data: dict | None = None) -> None:
        event = RunEvent(type_, run_id, group, kind, chat_jid, data or {})
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:  # a listener's bug must not stop a run
                log.exception("run event listener failed")

    # -- submitting work ----------------------------------------------------

    def _queue(self, group: str) -> GroupQueue:
        queue = self.queues.get(group)
        if queue is None:
            queue = self.queues[group] = GroupQueue(group)
        return queue

    def notify_messages(self, group: str) -> None:
        """New chat messages for group: pipe them into its live container, or queue the group."""
        queue = self._queue(group)
        active = queue.active
        if active is not None and active.kind == "message" and not active.closing and self._nursery:
            self._nursery.start_soon(self._pipe_messages, queue)
            return
        queue.messages = True
        self._ensure_runner(queue)
        if active is not None and self._nursery:
            self._nursery.start_soon(self._make_way, queue)

    async def submit_task(self, group: str, request: TaskRequest) -> RunHandle:
        """Scheduled-task work: before the group's messages, never receives follow-ups."""
        await self.namespaces.get(group)
        handle = RunHandle(new_id())
        queue = self._queue(group)
        queue.tasks.append(Work("task", handle, prompt=request.prompt, task=request))
        self.queued_runs[handle.run_id] = (group, "task")
        self._emit("queued", handle.run_id, group, "task", request.chat_jid)
        await self._make_way(queue)
        self._ensure_runner(queue)
        return handle

    async def submit_prompt(self, group: str, prompt: str, session_id: str | None = None) -> RunHandle:
        """An on-demand run (operators and tests): a fresh session unless one is named; its
        container closes once it answered."""
        await self.namespaces.get(group)
        if session_id is not None and not SESSION_RE.match(session_id):
            raise Invalid("sessionId must be 1-64 letters, digits, '_' or '-'")
        handle = RunHandle(new_id())
        queue = self._queue(group)
        queue.adhoc.append(Work("adhoc", handle, prompt=prompt, session_id=session_id))
        self.queued_runs[handle.run_id] = (group, "adhoc")
        self._emit("queued", handle.run_id, group, "adhoc", None)
        await self._make_way(queue)
        self._ensure_runner(queue)
        return handle

    async def new_session(self, group: str, chat_jid: str | None = None) -> None:
        """A chat's /new: forget the group's session; a live container keeping it closes.

        The next run starts a fresh session; chat_jid, when given, is told so.
        """
        await self.db.execute("DELETE FROM group_sessions WHERE group_name = ?", (group,))
        queue = self.queues.get(group)
        active = queue.active if queue else None
        if active is not None and active.group_session:
            active.group_session = False  # what it reports from now on is the old session
            if not active.closing:
                await self._write_close(active)
        await self.audit.record("info", "session", f"{group} started a new session", group=group)
        if chat_jid is not None and self.messages is not None:
            try:
                await self.messages.send(chat_jid, NEW_SESSION_TEXT)
            except Exception as exc:  # the session is reset all the same
                log.warning("telling %s about its new session failed: %s", chat_jid, exc)

    def set_max_concurrent(self, value: int) -> None:
        """Takes effect at once: raising it starts waiting groups now."""
        if not 1 <= value <= 64:
            raise Invalid("maxConcurrent must be between 1 and 64")
        self.limiter.total_tokens = value

    async def save_max_concurrent(self, value: int) -> None:
        self.set_max_concurrent(value)
        await self.db.execute(
            "INSERT INTO settings (key, value) VALUES ('max_concurrent', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (str(value),))
        await self.audit.record("info", "config", f"maxConcurrent set to {value}")

    def _ensure_runner(self, queue: GroupQueue) -> None:
        queue.poke()
        if not queue.runner and self._nursery is not None:
            queue.runner = True
            self._nursery.start_soon(self._serve_group, queue)

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

    async def _pipe_messages(self, queue: GroupQueue) -> None:
        async with queue.pipe_lock:
            active = queue.active
            if active is None or active.kind != "message" or active.closing:
                queue.messages = True
                self._ensure_runner(queue)
                return
            batch = await self.messages.pending(queue.name)
            if batch is None:
                return
            if batch.chat_jid != active.chat_jid:
                # The live container answers another chat: this one gets a container of its own.
                queue.messages = True
                self._ensure_runner(queue)
                await self._make_way(queue)
                return
            await write_follow_up(active.ipc_dir, batch.prompt, audit=self.audit, offload=self.offload)
            active.idle = False
            # The agent has the messages now; a later crash must not replay them.
            await self.messages.advance(queue.name, batch.cursor)

    async def _write_close(self, active: ActiveRun) -> None:
        active.closing = True
        await write_input_audited(self.audit, active.group, active.ipc_dir, "_close", b"", offload=self.offload)

    async def _make_way(self, queue: GroupQueue) -> None:
        """Work waits for the group's slot: an idle container must not hold it until its idle timeout."""
        active = queue.active
        if active is not None and active.idle and not active.closing:
            await self._write_close(active)

    def _close_after_turn(self, active: ActiveRun) -> bool:
        """Once a turn is done, close the container at once instead of waiting for follow-ups?"""
        if active.kind != "message":
            return True  # tasks and on-demand runs never receive follow-ups
        queue = self.queues.get(active.group)
        return queue is not None and queue.has_work()

    # -- the per-group runner -------------------------------------------------

    async def _serve_group(self, queue: GroupQueue) -> None:
        try:
            while queue.has_work():
                if queue.retry_at is not None and not (queue.tasks or queue.adhoc):
                    with trio.move_on_at(self.clock.to_trio(queue.retry_at)):
                        await queue.changed.wait()
                    if self.clock.now() < queue.retry_at and not (queue.tasks or queue.adhoc):
                        continue
                queue.waiting = True
                async with self.limiter:
                    queue.waiting = False
                    work = await self._next_work(queue)
                    if work is not None:
                        await self._execute(queue, work)
        finally:
            queue.runner = False
            queue.waiting = False

    async def _next_work(self, queue: GroupQueue) -> Work | None:
        if queue.tasks:
            return queue.tasks.popleft()
        if queue.adhoc:
            return queue.adhoc.popleft()
        queue.messages = False
        if self.messages is None:
            return None
        batch = await self.messages.pending(queue.name)
        if batch is None:
            queue.retry_at = None
            return None
        return Work("message", RunHandle(new_id()), prompt=batch.prompt, batch=batch)

    async def _execute(self, queue: GroupQueue, work: Work) -> None:
        group = queue.name
        started = self.clock.now()
        outcome = None
        try:
            ns = await self.namespaces.find(group)
            if ns is None:
                outcome = RunOutcome(work.handle.run_id, "error", None, f"namespace {group} no longer exists", 0)
                return
            outcome = await self._run(queue, work, ns, started)
        except Exception as exc:  # a bug in one run must not take the server down
            log.exception("run %s of %s failed", work.handle.run_id, group)
            await self.audit.record("error", "container", f"run failed unexpectedly: {exc!r}", group=group)
            outcome = RunOutcome(work.handle.run_id, "error", None, f"internal error: {exc!r}", 0)
        finally:
            self.queued_runs.pop(work.handle.run_id, None)
            if outcome is None:
                outcome = RunOutcome(work.handle.run_id, "cancelled", None, "the server stopped", 0)
            work.handle.finish(outcome)

    async def _run(self, queue: GroupQueue, work: Work, ns, started: float) -> RunOutcome:
        group = queue.name
        run_id = work.handle.run_id
        task = work.task
        config: ContainerConfig = (task.container_config if task and task.container_config else ns.containerConfig)
        group_session = work.kind == "message" or (task is not None and task.context_mode == "group")
        # None: the group has no session (yet, or since /new); the runner starts one and names it.
        resume = await self._group_session(group) if group_session else None
        # Also the IPC folder's name, so even a session the runner has yet to name has one here.
        session_id = (work.session_id if work.kind == "adhoc" else resume) or new_id()
        if work.kind == "message":
            chat_jid = work.batch.chat_jid
        elif task is not None and task.chat_jid:
            chat_jid = task.chat_jid
        else:
            chat_jid = ns.chatJids[0] if ns.chatJids else None
        name = f"nanoclaw-{group}-{self.clock.now_ms()}"
        ipc_dir = self.settings.ipc_dir / group / session_id
        active = ActiveRun(group, run_id, work.kind, name, session_id, ipc_dir, started, chat_jid, ns.isMain,
                           group_session=group_session)
        await self.db.execute(
            "INSERT INTO run_history (id, group_name, kind, status, container_name, session_id, "
            "schedule_id, prompt, started_at) VALUES (?, ?, ?, 'running', ?, ?, ?, ?, ?)",
            (run_id, group, work.kind, name, session_id, task.schedule_id if task else None,
             work.prompt[:2000], started),
        )
        self.queued_runs.pop(run_id, None)
        state = _RunState(session_id=session_id)
        token = None
        queue.active = active
        self._run_started.set()
        self._run_started = trio.Event()
        self._emit("started", run_id, group, work.kind, chat_jid, {"containerName": name, "sessionId": session_id})
        try:
            agent = agent_settings(config.agent, self.settings)
            budget = config.agent.monthlyTokenBudget if config.agent else None
            refusal = await budget_refusal(self.db, group, budget, self.clock.now())
            if refusal is not None:
                raise RunRefused(refusal)
            await self.remove_orphans()  # the engine may have been down at start-up
            await prepare_audited(self.audit, group, ipc_dir, fresh=True, offload=self.offload)
            refused = await self.offload(self._prepare_folders, group, ipc_dir)
            if refused:
                await self.audit.record("violation", "container", "not a folder (a link or a file?), left as it is: "
                                        + ", ".join(map(str, refused)), group=group)
            await check_disk(self, active, config)
            if self.proxy is not None:
                token = self.proxy.register_run(group)
            args = await self._run_args(active, ns, config, token)
            stdin = json.dumps({
                "prompt": work.prompt, "sessionId": None if group_session and resume is None else session_id,
                "group": group, "chatJid": chat_jid,
                "isMain": ns.isMain, "isScheduledTask": work.kind == "task", "agent": agent,
            }).encode() + b"\n"
            await self._container(active, args, stdin, config, state,
                                  lambda text: self._deliver(queue, work, active, state, text))
        except (RunRefused, Invalid) as exc:
            # No container: the chat (or the task's chat) hears why, as it would hear an answer.
            state.fail("error", str(exc))
            await self._deliver(queue, work, active, state, str(exc))
        except (RuntimeUnavailable, DiskQuotaExceeded) as exc:
            state.fail("error", str(exc))
        except NanoclawError as exc:  # e.g. the proxy cannot listen on the internal network
            state.fail("error", exc.message)
        except OSError as exc:
            self.runtime.mark_down(str(exc))
            state.fail("error", f"could not start the container: {exc.strerror or exc}")
        except trio.Cancelled:
            state.fail("cancelled", "the server stopped during this run")
            raise
        finally:
            queue.active = None
            if token is not None:
                self.proxy.unregister_run(token)
            with trio.CancelScope(shield=True):
                outcome = await self._finish(queue, work, active, state)
                self._emit("finished", run_id, group, work.kind, chat_jid, {
                    "status": outcome.status, "error": outcome.error, "durationMs": outcome.duration_ms,
                    "result": outcome.result, "usage": state.usage.as_dict(), "model": state.usage.model})
                for listener in self.run_finished_listeners:
                    await listener(group, active)
        return outcome

    def _prepare_folders(self, group: str, ipc_dir: Path) -> list[Path]:
        for path in (self.settings.groups_dir / group, self.settings.groups_dir / GLOBAL,
                     self.settings.sessions_dir / group):
            path.mkdir(parents=True, exist_ok=True)
        if container_user() != (os.getuid(), os.getgid()):  # a root server: hand them to the agent user
            return give_to_container([self.settings.groups_dir / group, self.settings.groups_dir / GLOBAL,
                                      self.settings.sessions_dir / group, ipc_dir, ipc_dir / "input",
                                      ipc_dir / "messages", ipc_dir / "tasks"], container_user())
        return []

    async def _group_session(self, group: str) -> str | None:
        row = await self.db.fetchone("SELECT session_id FROM group_sessions WHERE group_name = ?", (group,))
        return row[0] if row else None

    async def _run_args(self, active: ActiveRun, ns, config: ContainerConfig, token: str | None) -> list[str]:
        group = ns.name
        settings = self.settings
        env = {"TZ": local_timezone(), "NANOCLAW_GROUP": group, "NANOCLAW_RUN_ID": active.run_id}
        for item in config.env:
            key, _, value = item.partition("=")
            env[key] = value
        network, gateway = settings.container_network, self.runtime.state.host_gateway or "127.0.0.1"
        if config.network == "proxy-only":
            network, gateway = await self.internal_network.ensure(self.instance_id)
            if self.proxy is not None:
                await self.proxy.listen_also(gateway)
        if token is not None:
            env.update(self.proxy.container_env(token, gateway))
        mounts = [
            (settings.groups_dir / group, "/workspace/group", False),
            (settings.groups_dir / GLOBAL, "/workspace/global", not ns.isMain),
            (active.ipc_dir, "/workspace/ipc", False),
            (settings.sessions_dir / group, "/workspace/sessions", False),
        ]
        for request in config.additionalMounts:
            decision = await self.mounts.validate(request, group=group)
            if decision.allowed:
                mounts.append((Path(decision.canonicalHostPath), decision.containerPath, decision.readOnly))
        args = [
            "run", "-i", "--rm", "--pull", "never", "--name", active.container_name,
            "--label", f"nanoclaw.instance={self.instance_id}",
            "--label", f"nanoclaw.group={group}",
            "--label", f"nanoclaw.run={active.run_id}",
            "--network", network,
            *hardening_args(config.memoryMb, config.cpus, container_user()),
            *self.runtime.state.extra_run_args,
        ]
        for host, target, read_only in mounts:
            if ":" in str(host) or "," in str(host):
                await self.audit.record("violation", "mount", f"host path with ':' or ',' skipped: {host}", group=group)
                continue
            args += ["-v", f"{host}:{target}" + (":ro" if read_only else "")]
        for key, value in env.items():
            args += ["-e", f"{key}={value}"]
        args.append(config.image or settings.agent_image)
        return args

    # -- one container --------------------------------------------------------

    async def _container(self, active: ActiveRun, args: list[str], stdin: bytes, config: ContainerConfig,
                         state: _RunState, deliver) -> None:
        process = await self.runtime.start_container(args)
        parser = FrameParser()
        timer = _Deadlines(hard=trio.current_time() + config.timeoutSecs)
        stderr_tail = bytearray()
        exited = False
        try:
            async with trio.open_nursery() as nursery:
                async def feed_stdin():
                    try:
                        await process.stdin.send_all(stdin)
                        await process.stdin.aclose()
                    except trio.BrokenResourceError:
                        pass

                async def drain_stderr():
                    total = 0
                    async for chunk in process.stderr:
                        total += len(chunk)
                        stderr_tail.extend(chunk)
                        del stderr_tail[:-16384]
                        if total > STDERR_CAP:
                            state.fail("error", "stderr passed 10 MiB; the container was stopped")
                            nursery.start_soon(self.runtime.stop_container, active.container_name)
                            return

                async def watch_deadlines():
                    while True:
                        with trio.move_on_at(timer.next()):
                            await timer.changed.wait()
                            continue
                        now = trio.current_time()
                        if now >= timer.hard:
                            state.fail("timeout", f"no result within {config.timeoutSecs} s; the container was stopped")
                            await self.runtime.stop_container(active.container_name)
                            return
                        if timer.idle is not None and now >= timer.idle:
                            timer.idle = None
                            await self._write_close(active)

                nursery.start_soon(feed_stdin)
                nursery.start_soon(drain_stderr)
                nursery.start_soon(watch_deadlines)
                try:
                    async for chunk in process.stdout:
                        for frame in parser.feed(chunk):
                            if frame["status"] == "progress":
                                # Progress is not a result: it neither resets nor starts a deadline.
                                event = frame.get("event")
                                if isinstance(event, dict):
                                    self._emit("progress", active.run_id, active.group, active.kind,
                                               active.chat_jid, event)
                                continue
                            await self._on_frame(active, state, frame, deliver)
                            now = trio.current_time()
                            # Once the turn is done, waiting out the idle timeout would only hold the
                            # group's slot when no follow-up can come or other work waits for it.
                            idle = 0 if self._close_after_turn(active) else config.idleTimeoutSecs
                            timer.reset(hard=now + config.timeoutSecs, idle=now + idle)
                except OutputTooLarge as exc:
                    state.fail("error", f"{exc}; the container was stopped")
                    nursery.start_soon(self.runtime.stop_container, active.container_name)
                    # Keep draining meanwhile: the engine cannot stop a container whose output backs up.
                    async for _ in process.stdout:
                        pass
                state.exit_code = await process.wait()
                exited = True
                nursery.cancel_scope.cancel()
        finally:
            if not exited:
                with trio.CancelScope(shield=True):
                    await self.runtime.stop_container(active.container_name)
                    process.kill()
                    with trio.move_on_after(5):
                        await process.wait()
        if state.exit_code not in (0, None) and state.status is None:
            # The agent's own reason beats the last lines of stderr.
            tail = stderr_tail.decode(errors="replace").strip().splitlines()[-3:]
            reason = state.last_error or " | ".join(tail)
            state.fail("error", f"container exited with code {state.exit_code}" + (f": {reason}" if reason else ""))
            if state.exit_code == ENGINE_ERROR_EXIT:
                # `run` itself failed, as when the engine is gone: the watchdog should look now,
                # not only once some other CLI call happens to fail.
                self.runtime.mark_down(state.error)

    async def _on_frame(self, active: ActiveRun, state: _RunState, frame: dict, deliver) -> None:
        if state.usage.add(frame):
            await save_usage(self.db, active.run_id, state.usage)
        new_session = frame.get("newSessionId")
        if isinstance(new_session, str) and SESSION_RE.match(new_session) and new_session != state.session_id:
            state.session_id = new_session
            # The run record names the session the conversation is kept under.
            await self.db.execute("UPDATE run_history SET session_id = ? WHERE id = ?", (new_session, active.run_id))
            if active.group_session:
                await self.db.execute(
                    "INSERT INTO group_sessions VALUES (?, ?, ?) ON CONFLICT (group_name) DO UPDATE "
                    "SET session_id = excluded.session_id, updated_at = excluded.updated_at",
                    (active.group, new_session, self.clock.now()))
        if frame["status"] == "error":
            state.last_error = str(frame.get("error") or "the agent reported an error")[:2000]
            return
        state.last_error = None
        active.idle = True
        result = frame.get("result")
        if isinstance(result, str):
            text = strip_internal(result)
            if text:
                state.results.append(text[:10000])
                del state.results[:-50]
                await self.db.execute("UPDATE run_history SET results = ? WHERE id = ?",
                                      (json.dumps(state.results), active.run_id))
                for listener in self.before_result_listeners:
                    await listener(active.group, active)
                self._emit("result", active.run_id, active.group, active.kind, active.chat_jid, {"text": text})
                await deliver(text)

    async def _deliver(self, queue: GroupQueue, work: Work, active: ActiveRun, state: _RunState, text: str) -> None:
        try:
            if work.kind == "message":
                await self.messages.send(active.chat_jid, text)
                if not state.delivered:
                    await self.messages.advance(queue.name, work.batch.cursor)
            elif work.kind == "task" and work.task.on_result is not None:
                await work.task.on_result(text)
            state.delivered += 1
        except Exception as exc:  # a failed send must not kill the run
            log.exception("delivering a result of %s failed", queue.name)
            await self.audit.record("error", "delivery", f"result of run {active.run_id} not delivered: {exc}",
                                    group=queue.name)

    async def _finish(self, queue: GroupQueue, work: Work, active: ActiveRun, state: _RunState) -> RunOutcome:
        if state.status is None:
            if state.last_error is not None:
                state.fail("error", state.last_error)
            else:
                state.status = "success"
        finished = self.clock.now()
        duration = int((finished - active.started_at) * 1000)
        await self.db.execute(
            "UPDATE run_history SET status = ?, finished_at = ?, duration_ms = ?, exit_code = ?, "
            "results = ?, error = ? WHERE id = ?",
            (state.status, finished, duration, state.exit_code, json.dumps(state.results), state.error,
             active.run_id),
        )
        if work.kind == "message":
            if state.status in ("success", "cancelled") or state.delivered:
                queue.retries, queue.retry_at = 0, None
            else:
                await self._schedule_retry(queue, state)
        return RunOutcome(active.run_id, state.status, state.results[-1] if state.results else None,
                          state.error, duration)

    async def _schedule_retry(self, queue: GroupQueue, state: _RunState) -> None:
        queue.retries += 1
        if queue.retries > len(RETRY_DELAYS):
            await self.audit.record(
                "error", "container", f"giving up on {queue.name} after {len(RETRY_DELAYS)} retries: {state.error}",
                group=queue.name)
            queue.retries, queue.retry_at = 0, None
            return
        delay = RETRY_DELAYS[queue.retries - 1]
        queue.retry_at = self.clock.now() + delay
        queue.messages = True
        await self.audit.record("warning", "container",
                                f"run failed ({state.error}); retry {queue.retries} in {delay} s", group=queue.name)

    # -- statistics -------------------------------------------------------------

    def statistics(self) -> dict:
        running = sum(1 for q in self.queues.values() if q.active is not None)
        queued = sum(1 for q in self.queues.values() if q.active is None and q.has_work())
        return {"running": running, "queued": queued, "total": running + queued,
                "maxConcurrent": int(self.limiter.total_tokens)}

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
            "pendingMessages": queue.messages,
            "pendingTasks": len(queue.tasks),
            "pendingRuns": len(queue.adhoc),
            "retryCount": queue.retries,
            "nextRetryAt": queue.retry_at,
            "diskMb": self.disk_mb.get(group),
        }


@dataclass
class _RunState:
    status: str | None = None
    error: str | None = None
    last_error: str | None = None
    exit_code: int | None = None
    results: list = field(default_factory=list)
    delivered: int = 0
    usage: Usage = field(default_factory=Usage)
    # The session the runner last reported (the run's own id until it does).
    session_id: str | None = None

    def fail(self, status: str, error: str) -> None:
        if self.status is None:
            self.status, self.error = status, error


class _Deadlines:
    """The hard and idle deadlines of one container, in Trio time."""

    def __init__(self, hard: float) -> None:
        self.hard = hard
        self.idle: float | None = None
        self.changed = trio.Event()

    def next(self) -> float:
        return min(self.hard, self.idle if self.idle is not None else float("inf"))

    def reset(self, *, hard: float, idle: float) -> None:
        self.hard, self.idle = hard, idle
        self.changed.set()
        self.changed = trio.Event()


async def write_follow_up(ipc_dir: Path, text: str, *, audit: Audit | None = None, offload=None) -> str:
    """Write one follow-up atomically into the container's input folder (never through a link the
    container planted: see nanoclaw.ipc._tree); returns its file name."""
    name = f"{int(time.time() * 1000)}-{secrets.token_hex(4)}.json"
    data = json.dumps({"type": "message", "text": text}).encode()
    await write_input_audited(audit, ipc_dir.parent.name, ipc_dir, name, data, offload=offload)
    return name
