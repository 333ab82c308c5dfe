"""One run of the supervisor's: prepare its folders, launch its container, record it, deliver
its results, finish it (and schedule a retry of a failed chat batch).

A part of Supervisor (its base class): these methods use the supervisor's services and queues.
"""
from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import trio

from nanoclaw import safefs
from nanoclaw.audit import Audit
from nanoclaw.broadcast import Broadcast
from nanoclaw.clock import Clock, local_timezone
from nanoclaw.config import Settings
from nanoclaw.errors import Invalid, NanoclawError
from nanoclaw.ipc import prepare_audited
from nanoclaw.logs import log_context
from nanoclaw.models import ContainerConfig
from nanoclaw.namespaces import GLOBAL
from nanoclaw.proxy import CredentialProxy
from nanoclaw.runtime import InternalNetwork, Runtime, RuntimeUnavailable, container_user, give_to_container, run_args
from nanoclaw.supervisor._agent import agent_settings
from nanoclaw.supervisor._container import ContainerHooks, RunState, run_container
from nanoclaw.supervisor._history import (finish_run, insert_run, save_group_session,
                                          set_run_results, set_run_session, stored_session)
from nanoclaw.supervisor._queue import ActiveRun, GroupQueue
from nanoclaw.supervisor._quota import DiskQuotaExceeded, check_disk, remove_leftovers, watch_disk
from nanoclaw.security.mounts import MountPolicy
from nanoclaw.store import Database
from nanoclaw.supervisor._types import RunOutcome, RunStatus, Work, WorkFeed, new_id
from nanoclaw.text import strip_internal
from nanoclaw.supervisor._usage import RunRefused, budget_refusal, save_usage

log = logging.getLogger("nanoclaw.supervisor")

RETRY_DELAYS = (5, 10, 20, 40, 80)
SESSION_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class RunLife:
    # What Supervisor.__init__ sets (and the methods of its own these use).
    settings: Settings
    db: Database
    clock: Clock
    audit: Audit
    mounts: MountPolicy
    runtime: Runtime
    proxy: CredentialProxy
    feed: WorkFeed
    offload: Any
    instance_id: str | None
    internal_network: InternalNetwork
    queued_runs: dict
    run_finished_listeners: list
    before_result_listeners: list
    _run_started: Broadcast
    _emit: Any
    _write_close: Any
    _close_after_turn: Any
    remove_orphans: Any

    async def _run(self, queue: GroupQueue, work: Work, ns, started: float, fed: bool) -> RunOutcome:
        group = queue.name
        run_id = work.handle.run_id
        sink = work.sink
        config: ContainerConfig = work.container_config or ns.containerConfig
        group_session = work.group_session
        # None: the group has no session (yet, or since /new); the runner starts one and names it.
        resume = await stored_session(self.db, group) if group_session else None
        # Also the IPC folder's name, so even a session the runner has yet to name has one here.
        session_id = work.session_id or resume or new_id()
        chat_jid = work.chat_jid or (ns.chatJids[0] if ns.chatJids else None)
        log_context(group=group, runId=run_id)  # every log line of this run names it
        name = f"nanoclaw-{group}-{self.clock.now_ms()}"
        ipc_dir = self.settings.ipc_dir / group / session_id
        active = ActiveRun(group, run_id, work.kind, name, session_id, ipc_dir, started, chat_jid, ns.isMain,
                           group_session=group_session, fed=fed)
        await insert_run(self.db, run_id, group, work.kind, name, session_id, work.schedule_id,
                         work.prompt[:2000], started)
        self.queued_runs.pop(run_id, None)
        state = RunState(session_id=session_id)
        token = None
        queue.active = active
        self._run_started.fire()
        self._emit("started", run_id, group, work.kind, chat_jid, {"containerName": name, "sessionId": session_id})
        log.info("%s run started in container %s", work.kind, name)
        try:
            await self._tell(sink.started, active)
            agent = agent_settings(config.agent, self.settings)
            budget = config.agent.monthlyTokenBudget if config.agent else None
            refusal = await budget_refusal(self.db, group, budget, self.clock.now())
            if refusal is not None:
                raise RunRefused(refusal)
            await self.remove_orphans()  # the engine may have been down at start-up
            refused = await self.offload(self._prepare_folders, group, ipc_dir)
            if refused:
                await self.audit.record("violation", "container", "not a folder (a link or a file?), left as it is: "
                                        + ", ".join(map(str, refused)), group=group)
            await prepare_audited(self.audit, group, ipc_dir, fresh=True, offload=self.offload)
            await check_disk(self, active, config, sink)
            token = self.proxy.register_run(group, run_id, budget)
            args = await self._run_args(active, ns, config, token)
            stdin = json.dumps({
                "prompt": work.prompt, "sessionId": None if group_session and resume is None else session_id,
                "group": group, "chatJid": chat_jid,
                "isMain": ns.isMain, "isScheduledTask": work.kind == "task", "agent": agent,
                **({"attachments": work.attachments} if work.attachments else {}),
            }).encode() + b"\n"
            await run_container(self.runtime, active.container_name, args, stdin, config, state, ContainerHooks(
                on_frame=lambda frame: self._on_frame(
                    active, state, frame, lambda text: self._deliver(sink, active, state, text)),
                on_progress=lambda event: self._progress(sink, active, event),
                write_close=lambda: self._write_close(active),
                close_after_turn=lambda: self._close_after_turn(active),
                expired=lambda: self.proxy.unregister_run(token),
                watch=lambda: watch_disk(self, active, config, sink, state)))
        except (RunRefused, Invalid) as exc:
            # No container: the chat (or the task's chat) hears why, as it would hear an answer.
            state.fail("error", str(exc))
            await self._deliver(sink, active, state, str(exc))
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
                outcome = await self._finish(queue, active, state)
                log.info("run finished: %s in %d ms", outcome.status, outcome.duration_ms)
                self._emit("finished", run_id, group, work.kind, chat_jid, {
                    "status": outcome.status, "error": outcome.error, "durationMs": outcome.duration_ms,
                    "result": outcome.result, "usage": state.usage.as_dict(), "model": state.usage.model})
                await self._tell(sink.finished, active, outcome)  # the handle hears it all the same
                for listener in self.run_finished_listeners:
                    await listener(group, active)
                await self._remove_leftovers(group)
        return outcome

    def _prepare_folders(self, group: str, ipc_dir: Path) -> list[Path]:
        """Make the mount points (through no-follow fds) and hand the container's to its user.
        Only the mount points: what is inside them is the container's (the IPC subfolders are
        made after, by nanoclaw.ipc, and take their owner from the folder they are made in)."""
        settings = self.settings
        mounts = [(settings.groups_dir, (group,)), (settings.groups_dir, (GLOBAL,)),
                  (settings.sessions_dir, (group,)), (ipc_dir.parent.parent, (ipc_dir.parent.name, ipc_dir.name))]
        for root, parts in [*mounts, (settings.media_dir, (group,))]:  # media: the host's, read-only
            os.close(safefs.open_dir(root, parts))
        if container_user() != (os.getuid(), os.getgid()):  # a root server: hand them to the agent user
            return give_to_container([root.joinpath(*parts) for root, parts in mounts], container_user())
        return []

    async def _run_args(self, active: ActiveRun, ns, config: ContainerConfig, token: str) -> list[str]:
        group = ns.name
        settings = self.settings
        env = {"TZ": local_timezone(), "NANOCLAW_GROUP": group, "NANOCLAW_RUN_ID": active.run_id}
        for item in config.env:
            key, _, value = item.partition("=")
            env[key] = value
        network, gateway = settings.container_network, self.runtime.state.host_gateway or "127.0.0.1"
        if config.network == "proxy-only":
            assert self.instance_id is not None, "Supervisor.run() loads it before any run"
            network, gateway = await self.internal_network.ensure(self.instance_id)
            await self.proxy.listen_also(gateway)
        env.update(self.proxy.container_env(token, gateway))
        mounts = [
            (settings.groups_dir / group, "/workspace/group", False),
            (settings.groups_dir / GLOBAL, "/workspace/global", not ns.isMain),
            (active.ipc_dir, "/workspace/ipc", False),
            (settings.sessions_dir / group, "/workspace/sessions", False),
            # Chat media: the host writes there, the container only reads (docs/security.md).
            (settings.media_dir / group, "/workspace/media", True),
        ]
        for request in config.additionalMounts:
            decision = await self.mounts.validate(request, group=group)
            if decision.allowed and decision.canonicalHostPath and decision.containerPath:
                mounts.append((Path(decision.canonicalHostPath), decision.containerPath, decision.readOnly))
        labels = {"nanoclaw.instance": self.instance_id, "nanoclaw.group": group, "nanoclaw.run": active.run_id}
        args, skipped = run_args(name=active.container_name, labels=labels, network=network,
                                 memory_mb=config.memoryMb, cpus=config.cpus, extra=self.runtime.state.extra_run_args,
                                 mounts=mounts, env=env, image=config.image or settings.agent_image)
        for host in skipped:
            await self.audit.record("violation", "mount", f"host path with ':' or ',' skipped: {host}", group=group)
        return args

    async def _on_frame(self, active: ActiveRun, state: RunState, frame: dict, deliver) -> None:
        if state.usage.add(frame):
            await save_usage(self.db, active.run_id, state.usage)
        new_session = frame.get("newSessionId")
        if isinstance(new_session, str) and SESSION_RE.match(new_session) and new_session != state.session_id:
            state.session_id = new_session
            # The run record names the session the conversation is kept under.
            await set_run_session(self.db, active.run_id, new_session)
            if active.group_session:
                await save_group_session(self.db, active.group, new_session, self.clock.now())
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
                await set_run_results(self.db, active.run_id, state.results)
                for listener in self.before_result_listeners:
                    await listener(active.group, active)
                self._emit("result", active.run_id, active.group, active.kind, active.chat_jid, {"text": text})
                await deliver(text)

    async def _remove_leftovers(self, group: str) -> None:
        try:
            removed = await self.offload(remove_leftovers, self.settings, group)
        except OSError as exc:
            log.warning("could not remove what the run of %s left: %s", group, exc)
            return
        if removed:
            log.info("removed what the run left: %s", ", ".join(removed))

    async def _tell(self, call, active: ActiveRun, *args) -> None:
        """Call a method of the run's sink; its bug is logged and the run goes on."""
        try:
            await call(active, *args)
        except Exception:
            log.exception("the sink of run %s failed in %s", active.run_id, call.__name__)

    def _progress(self, sink, active: ActiveRun, event: dict) -> None:
        self._emit("progress", active.run_id, active.group, active.kind, active.chat_jid, event)
        try:
            sink.event(active, event)
        except Exception:  # a sink's bug must not stop the run
            log.exception("the sink of run %s failed on a progress event", active.run_id)

    async def _deliver(self, sink, active: ActiveRun, state: RunState, text: str) -> None:
        try:
            await sink.result(active, text)
            state.delivered += 1
        except Exception as exc:  # a failed send must not kill the run
            log.exception("delivering a result of %s failed", active.group)
            await self.audit.record("error", "delivery", f"result of run {active.run_id} not delivered: {exc}",
                                    group=active.group)

    async def _finish(self, queue: GroupQueue, active: ActiveRun, state: RunState) -> RunOutcome:
        if state.last_error is not None:
            state.fail("error", state.last_error)  # unless the run already ended otherwise
        status: RunStatus = state.status or "success"
        finished = self.clock.now()
        duration = int((finished - active.started_at) * 1000)
        await finish_run(self.db, active.run_id, status=status, finished=finished, duration_ms=duration,
                         exit_code=state.exit_code, results=state.results, error=state.error)
        if active.fed:
            if status in ("success", "cancelled") or state.delivered:
                queue.retries, queue.retry_at = 0, None
            else:
                await self._schedule_retry(queue, state)
        return RunOutcome(active.run_id, status, state.results[-1] if state.results else None,
                          state.error, duration)

    async def _schedule_retry(self, queue: GroupQueue, state: RunState) -> None:
        queue.retries += 1
        if queue.retries > len(RETRY_DELAYS):
            await self.audit.record(
                "error", "container", f"giving up on {queue.name} after {len(RETRY_DELAYS)} retries: {state.error}",
                group=queue.name)
            queue.retries, queue.retry_at = 0, None
            return
        delay = RETRY_DELAYS[queue.retries - 1]
        queue.retry_at = self.clock.now() + delay
        queue.fed = True
        await self.audit.record("warning", "container",
                                f"run failed ({state.error}); retry {queue.retries} in {delay} s", group=queue.name)
