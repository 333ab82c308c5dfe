"""The IPC tree of one session, <data>/ipc/<group>/<session>/{input,messages,tasks}, as the host made it.

A container sees that session folder as /workspace/ipc and may swap `input`, `messages`
or `tasks` for a link (to anywhere: another file system, /proc) or a file. Every use
here opens the tree through no-follow directory fds, removes such an entry (the link
itself), makes the folder again and reports a violation line for the audit log.
The blocking functions run in a thread; the async ones audit what they found.
"""
from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import trio

from nanoclaw import safefs, safejson

log = logging.getLogger("nanoclaw.ipc")

SUBFOLDERS = ("input", "messages", "tasks")
MAX_FILE = 256 * 1024
# Files handled per folder and sweep; the rest wait for the next sweep.
MAX_PER_SWEEP = 500
# The errors folder keeps at most this many quarantined files; past it they are deleted.
MAX_QUARANTINED = 1000


def open_sub(ipc_dir: Path, sub: str, violations: list[str]) -> int:
    """A verified no-follow fd of ipc_dir/sub (made, or repaired, as needed)."""
    return safefs.open_dir(ipc_dir.parent.parent, (ipc_dir.parent.name, ipc_dir.name, sub),
                           repair=True, violations=violations)


def prepare(ipc_dir: Path, fresh: bool = False) -> list[str]:
    """All three folders exist as real folders; fresh (before a run): no stale _close is left."""
    violations: list[str] = []
    for sub in SUBFOLDERS:
        fd = open_sub(ipc_dir, sub, violations)
        try:
            if sub == "input" and fresh:
                safefs.remove(fd, "_close")
        finally:
            os.close(fd)
    return violations


def write_input(ipc_dir: Path, name: str, data: bytes) -> list[str]:
    """Write input/<name> atomically through the verified folder; never through a link."""
    violations: list[str] = []
    fd = open_sub(ipc_dir, "input", violations)
    try:
        safefs.write_atomic_at(fd, name, data)
    finally:
        os.close(fd)
    return violations


@dataclass
class Pending:
    """One container -> host file: its JSON object, or the reason it is refused."""

    kind: str
    name: str
    payload: dict | None = None
    problem: str | None = None
    raw: bytes = b""


def scan(ipc_dir: Path, kinds=("messages", "tasks")) -> tuple[list[Pending], list[str]]:
    """Read the pending *.json files of the session (each failure is that file's problem)."""
    found: list[Pending] = []
    violations: list[str] = []
    for kind in kinds:
        fd = open_sub(ipc_dir, kind, violations)
        try:
            names = sorted(n for n in os.listdir(fd) if n.endswith(".json") and not n.startswith("."))
            for name in names[:MAX_PER_SWEEP]:
                found.append(_read(fd, kind, name))
        finally:
            os.close(fd)
    return found, violations


def _read(fd: int, kind: str, name: str) -> Pending:
    item = Pending(kind, name)
    try:
        item.raw = safefs.read_regular(fd, name, MAX_FILE)
        payload = safejson.loads(item.raw, max_bytes=MAX_FILE)
        if isinstance(payload, dict):
            item.payload = payload
        else:
            item.problem = "not a JSON object"
    except safefs.UnsafeEntry as exc:
        item.problem = exc.strerror
    except safejson.BadJson as exc:
        item.problem = f"unreadable: {exc}"
    except (OSError, ValueError) as exc:
        item.problem = f"unreadable: {exc}"
    return item


def done(ipc_dir: Path, item: Pending, quarantine: bool) -> list[str]:
    """Remove a handled file; a refused one first goes to <data>/ipc/errors as a copy of the bytes
    read (no rename: the folders may be on different file systems). Never raises OSError."""
    violations: list[str] = []
    try:
        if quarantine and item.raw:
            _keep(ipc_dir, item)
        fd = open_sub(ipc_dir, item.kind, violations)
        try:
            safefs.remove(fd, item.name)
        finally:
            os.close(fd)
    except OSError as exc:
        violations.append(f"could not remove {item.kind}/{item.name}: {exc.strerror or exc}")
    return violations


def _keep(ipc_dir: Path, item: Pending) -> None:
    group = ipc_dir.parent.name
    fd = safefs.open_dir(ipc_dir.parent.parent, ("errors",), repair=True)
    try:
        with os.scandir(fd) as entries:
            if sum(1 for _ in zip(entries, range(MAX_QUARANTINED))) >= MAX_QUARANTINED:
                return
        safefs.write_atomic_at(fd, f"{group}-{item.kind}-{secrets.token_hex(3)}-{item.name}", item.raw,
                               mode=0o600, durable=False)
    finally:
        os.close(fd)


async def report(audit, group: str, violations: list[str]) -> None:
    """Audit each violation (or only log it when the caller has no audit log)."""
    for line in violations:
        if audit is None:
            log.warning("IPC folder of %s: %s", group, line)
        else:
            await audit.record("violation", "ipc", f"IPC folder of {group}: {line}", group=group)


async def write_input_audited(audit, group: str, ipc_dir: Path, name: str, data: bytes, *, offload=None) -> None:
    violations = await (offload or trio.to_thread.run_sync)(write_input, ipc_dir, name, data)
    await report(audit, group, violations)


async def prepare_audited(audit, group: str, ipc_dir: Path, *, fresh: bool = False, offload=None) -> None:
    violations = await (offload or trio.to_thread.run_sync)(prepare, ipc_dir, fresh)
    await report(audit, group, violations)
