"""IPC between containers and the host through files under <data>/ipc/<group>/<session>/.

Host -> container: `input/<ms>-<rand>.json` follow-ups and the `input/_close` sentinel.
Container -> host: `messages/*.json` (send a chat message, or a file from the group
folder with `{"type": "send_file", "chatJid", "path", "caption"}`) and `tasks/*.json`
(schedule / pause / resume / cancel a task). The folder a file sits in is the
sender's identity.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import trio

from nanoclaw.audit import Audit
from nanoclaw.clock import Clock
from nanoclaw.groupfiles import read_group_file
from nanoclaw.config import Settings
from nanoclaw.errors import Forbidden, Invalid, NanoclawError
from nanoclaw.ipc import _tree
from nanoclaw.ipc._input import write_close, write_follow_up
from nanoclaw.ipc._tree import Pending, prepare_audited
from nanoclaw.models import GROUP_NAME_RE
from nanoclaw.namespaces import Namespaces

if TYPE_CHECKING:
    from nanoclaw.channels import Outbox
    from nanoclaw.scheduler import Scheduler
    from nanoclaw.supervisor import Supervisor

log = logging.getLogger("nanoclaw.ipc")

SCAN_INTERVAL = 0.1  # seconds; files are acted on well within 250 ms
TASK_TYPES = {"schedule_task", "pause_task", "resume_task", "cancel_task"}
RATE_WINDOW = 60.0


def ipc_paths(settings: Settings, group: str, session_id: str) -> Path:
    return settings.ipc_dir / group / session_id


class IpcWatcher:
    """Acts on container -> host files of live containers (and one last sweep after each run).

    `await nursery.start(watcher.run)`. Nothing a container writes stops it: each group and
    each file has its own fault barrier, and a refused file is quarantined and audited.
    """

    def __init__(self, settings: Settings, audit: Audit, namespaces: Namespaces, supervisor: Supervisor,
                 scheduler: Scheduler, outbox: Outbox, *, offload=None, clock: Clock | None = None) -> None:
        self.settings = settings
        self.audit = audit
        self.namespaces = namespaces
        self.supervisor = supervisor
        self.clock = clock or audit.clock
        self.scheduler = scheduler  # handle_ipc(group, is_main, request)
        self.outbox = outbox  # send(chat_jid, text), send_file(chat_jid, file, caption)
        self.processed = 0
        self.offload = offload or trio.to_thread.run_sync
        self._lock = trio.Lock()
        # group -> [window start, files taken in the window, refused in the window]
        self._rate: dict[str, list] = {}
        self._failing: dict[str, str] = {}  # group -> why its last sweep failed
        supervisor.run_finished_listeners.append(self._after_run)
        supervisor.before_result_listeners.append(self._after_run)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> NoReturn:
        task_status.started()
        while True:
            # No stdlib file-change notification exists, so live run folders are scanned every
            # SCAN_INTERVAL; with no container live the watcher sleeps until one starts.
            await self.supervisor.wait_active()
            await trio.sleep(SCAN_INTERVAL)
            runs = self.supervisor.active_runs()
            if runs:
                await self.sweep([(group, run.ipc_dir, run.is_main, run.chat_jid) for group, run in runs])

    async def _after_run(self, group: str, run) -> None:
        await self.sweep([(group, run.ipc_dir, run.is_main, run.chat_jid)])

    async def sweep(self, folders: list[tuple[str, Path, bool, str | None]]) -> int:
        """Handle every pending file in the given run folders; returns how many were handled."""
        handled = 0
        async with self._lock:
            for group, ipc_dir, is_main, chat_jid in folders:
                if not GROUP_NAME_RE.match(group):
                    continue
                try:
                    handled += await self._sweep_group(group, ipc_dir, is_main, chat_jid)
                    self._failing.pop(group, None)
                except Exception as exc:  # one group's trouble must not stop the others (or the server)
                    if self._failing.get(group) != repr(exc):  # once per cause, not every scan
                        self._failing[group] = repr(exc)
                        log.exception("IPC sweep of %s failed", group)
                        await self.audit.record("error", "ipc", f"IPC sweep of {group} failed: {exc!r}", group=group)
        return handled

    async def _sweep_group(self, group: str, ipc_dir: Path, is_main: bool, chat_jid: str | None) -> int:
        found, violations = await self.offload(_tree.scan, ipc_dir)
        await _tree.report(self.audit, group, violations)
        for item in found:
            await self._handle(group, ipc_dir, is_main, chat_jid, item)
        return len(found)

    def _over_rate(self, group: str) -> bool:
        """Count one file against the group's files per minute; True when it is over."""
        now = self.clock.now()
        window = self._rate.get(group)
        if window is None or now - window[0] >= RATE_WINDOW:
            window = self._rate[group] = [now, 0, 0]
        window[1] += 1
        if window[1] <= self.settings.ipc_files_per_minute:
            return False
        window[2] += 1
        return True

    async def _handle(self, group: str, ipc_dir: Path, is_main: bool, chat_jid, item: Pending) -> None:
        quarantine = True
        try:
            if self._over_rate(group):
                if self._rate[group][2] == 1:  # one audit entry per burst
                    await self.audit.record(
                        "violation", "ipc",
                        f"{group} wrote more than {self.settings.ipc_files_per_minute} IPC files in a minute; "
                        "the rest of this minute's files are quarantined without being acted on", group=group,
                        details={"limit": self.settings.ipc_files_per_minute, "file": item.name})
                return
            payload = item.payload
            if item.problem or payload is None:
                raise Invalid(item.problem or "not a JSON object")
            if item.kind == "messages":
                await self._send_message(group, is_main, chat_jid, payload)
            else:
                await self._task_request(group, is_main, payload)
            self.processed += 1
            quarantine = False
        except NanoclawError as exc:
            severity = "violation" if exc.status == 403 else "warning"
            await self.audit.record(severity, "ipc", f"refused {item.kind} file from {group}: {exc.message}",
                                    group=group, details={"file": item.name})
        except Exception as exc:  # a bug must not stop the watcher; the file is kept for inspection
            log.exception("IPC file %s/%s of %s failed", item.kind, item.name, group)
            await self.audit.record("error", "ipc", f"{item.kind} file from {group} failed: {exc!r}", group=group,
                                    details={"file": item.name})
        finally:
            with trio.CancelScope(shield=True):
                violations = await self.offload(_tree.done, ipc_dir, item, quarantine)
                await _tree.report(self.audit, group, violations)

    async def _send_message(self, group: str, is_main: bool, default_jid: str | None, payload: dict) -> None:
        if payload.get("type") == "send_file":
            return await self._send_file(group, is_main, default_jid, payload)
        if payload.get("type") != "message":
            raise Invalid(f"unknown message type {payload.get('type')!r}")
        text = payload.get("text")
        if not isinstance(text, str) or not text.strip():
            raise Invalid("a message needs non-empty text")
        jid = await self._target(group, is_main, default_jid, payload)
        await self.outbox.send(jid, text)
        await self.audit.record("info", "ipc", f"{group} sent a message to {jid}", group=group)

    async def _send_file(self, group: str, is_main: bool, default_jid: str | None, payload: dict) -> None:
        caption = payload.get("caption")
        if caption is not None and not isinstance(caption, str):
            raise Invalid("caption must be text")
        jid = await self._target(group, is_main, default_jid, payload)
        try:
            file = await self.offload(read_group_file, self.settings.groups_dir / group,
                                      self.settings.media_dir / group, payload.get("path"))
        except (ValueError, OSError) as exc:
            raise Invalid(f"send_file refused: {exc}") from None
        await self.outbox.send_file(jid, file, caption)
        await self.audit.record("info", "ipc", f"{group} sent the file {file.path} ({len(file.data)} bytes) "
                                f"to {jid}", group=group)

    async def _target(self, group: str, is_main: bool, default_jid: str | None, payload: dict) -> str:
        """The chat a message file may go to."""
        jid = payload.get("chatJid") or default_jid
        if not isinstance(jid, str) or not jid:
            raise Invalid("no chatJid to send to")
        if not is_main:
            owner = await self.namespaces.by_jid(jid)
            if owner is None or owner.name != group:
                raise Forbidden(f"group {group} may only message its own chats, not {jid}")
        return jid

    async def _task_request(self, group: str, is_main: bool, payload: dict) -> None:
        if payload.get("type") not in TASK_TYPES:
            raise Invalid(f"unknown task request type {payload.get('type')!r}")
        await self.scheduler.handle_ipc(group, is_main, payload)


__all__ = ["IpcWatcher", "ipc_paths", "prepare_audited", "write_close", "write_follow_up"]
