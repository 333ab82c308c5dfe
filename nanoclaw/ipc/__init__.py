"""IPC between containers and the host through files under <data>/ipc/<group>/<session>/.

Host -> container: `input/<ms>-<rand>.json` follow-ups and the `input/_close` sentinel.
Container -> host: `messages/*.json` (send a chat message, or a file from the group
folder with `{"type": "send_file", "chatJid", "path", "caption"}`) and `tasks/*.json`
(schedule / pause / resume / cancel a task). The folder a file sits in is the
sender's identity.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
from pathlib import Path

import trio

from nanoclaw.audit import Audit
from nanoclaw.channels._media import read_group_file
from nanoclaw.config import Settings
from nanoclaw.errors import Forbidden, Invalid, NanoclawError
from nanoclaw.models import GROUP_NAME_RE
from nanoclaw.namespaces import Namespaces
from nanoclaw.supervisor import Supervisor

log = logging.getLogger("nanoclaw.ipc")

SCAN_INTERVAL = 0.1  # seconds; files are acted on well within 250 ms
MAX_FILE = 256 * 1024
TASK_TYPES = {"schedule_task", "pause_task", "resume_task", "cancel_task"}


def ipc_paths(settings: Settings, group: str, session_id: str) -> Path:
    return settings.ipc_dir / group / session_id


class IpcWatcher:
    """Acts on container -> host files of live containers (and one last sweep after each run).

    `await nursery.start(watcher.run)`.
    """

    def __init__(self, settings: Settings, audit: Audit, namespaces: Namespaces, supervisor: Supervisor,
                 *, offload=None) -> None:
        self.settings = settings
        self.audit = audit
        self.namespaces = namespaces
        self.supervisor = supervisor
        self.scheduler = None  # set when the scheduler exists: handle_ipc(group, is_main, request)
        self.processed = 0
        self.offload = offload or trio.to_thread.run_sync
        self._lock = trio.Lock()
        supervisor.run_finished_listeners.append(self._after_run)

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
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
        async with self._lock:
            found = await self.offload(_collect, folders)
            for group, is_main, chat_jid, path, kind, payload, problem in found:
                await self._handle(group, is_main, chat_jid, path, kind, payload, problem)
            return len(found)

    async def _handle(self, group, is_main, chat_jid, path: Path, kind, payload, problem) -> None:
        try:
            if problem:
                raise Invalid(problem)
            if kind == "messages":
                await self._send_message(group, is_main, chat_jid, payload)
            else:
                await self._task_request(group, is_main, payload)
        except NanoclawError as exc:
            severity = "violation" if exc.status == 403 else "warning"
            await self.audit.record(severity, "ipc", f"refused {kind} file from {group}: {exc.message}",
                                    group=group, details={"file": path.name})
            await self.offload(_quarantine, self.settings.ipc_dir / "errors", group, path)
            return
        except Exception as exc:  # a bug must not stop the watcher; the file is kept for inspection
            log.exception("IPC file %s failed", path)
            await self.audit.record("error", "ipc", f"{kind} file from {group} failed: {exc}", group=group)
            await self.offload(_quarantine, self.settings.ipc_dir / "errors", group, path)
            return
        self.processed += 1
        await self.offload(lambda: path.unlink(missing_ok=True))

    async def _send_message(self, group: str, is_main: bool, default_jid: str | None, payload: dict) -> None:
        if payload.get("type") == "send_file":
            return await self._send_file(group, is_main, default_jid, payload)
        if payload.get("type") != "message":
            raise Invalid(f"unknown message type {payload.get('type')!r}")
        text = payload.get("text")
        if not isinstance(text, str) or not text.strip():
            raise Invalid("a message needs non-empty text")
        jid, messages = await self._target(group, is_main, default_jid, payload)
        await messages.send(jid, text)
        await self.audit.record("info", "ipc", f"{group} sent a message to {jid}", group=group)

    async def _send_file(self, group: str, is_main: bool, default_jid: str | None, payload: dict) -> None:
        caption = payload.get("caption")
        if caption is not None and not isinstance(caption, str):
            raise Invalid("caption must be text")
        jid, messages = await self._target(group, is_main, default_jid, payload)
        try:
            file = await self.offload(read_group_file, self.settings.groups_dir / group, payload.get("path"))
        except (ValueError, OSError) as exc:
            raise Invalid(f"send_file refused: {exc}") from None
        await messages.send_file(jid, file, caption)
        await self.audit.record("info", "ipc", f"{group} sent the file {file.path} ({len(file.data)} bytes) "
                                f"to {jid}", group=group)

    async def _target(self, group: str, is_main: bool, default_jid: str | None, payload: dict):
        """The chat a message file may go to, and the channel layer to send it with."""
        jid = payload.get("chatJid") or default_jid
        if not isinstance(jid, str) or not jid:
            raise Invalid("no chatJid to send to")
        if not is_main:
            owner = await self.namespaces.by_jid(jid)
            if owner is None or owner.name != group:
                raise Forbidden(f"group {group} may only message its own chats, not {jid}")
        messages = self.supervisor.messages
        if messages is None:
            raise Invalid("no channel layer is running to send messages")
        return jid, messages

    async def _task_request(self, group: str, is_main: bool, payload: dict) -> None:
        if payload.get("type") not in TASK_TYPES:
            raise Invalid(f"unknown task request type {payload.get('type')!r}")
        if self.scheduler is None:
            raise Invalid("the scheduler is not running")
        await self.scheduler.handle_ipc(group, is_main, payload)


def _collect(folders):
    """Read pending files (blocking; runs in a thread)."""
    found = []
    for group, ipc_dir, is_main, chat_jid in folders:
        if not GROUP_NAME_RE.match(group):
            continue
        for kind in ("messages", "tasks"):
            folder = ipc_dir / kind
            try:
                names = sorted(n for n in os.listdir(folder) if n.endswith(".json") and not n.startswith("."))
            except FileNotFoundError:
                continue
            for name in names:
                path = folder / name
                payload, problem = None, None
                try:
                    if path.is_symlink() or not path.is_file():
                        problem = "not a regular file"
                    elif path.stat().st_size > MAX_FILE:
                        problem = f"larger than {MAX_FILE // 1024} KiB"
                    else:
                        payload = json.loads(path.read_bytes())
                        if not isinstance(payload, dict):
                            problem = "not a JSON object"
                except (OSError, ValueError) as exc:
                    problem = f"unreadable: {exc}"
                found.append((group, is_main, chat_jid, path, kind, payload, problem))
    return found


def _quarantine(errors_dir: Path, group: str, path: Path) -> None:
    errors_dir.mkdir(parents=True, exist_ok=True)
    target = errors_dir / f"{group}-{path.parent.name}-{secrets.token_hex(3)}-{path.name}"
    try:
        os.replace(path, target)
    except FileNotFoundError:
        pass


__all__ = ["IpcWatcher", "ipc_paths"]
