"""A group's disk quota (containerConfig.maxDiskMb) over every tree its containers can write:
groups/<group>, sessions/<group>, ipc/<group>, and groups/global for the main group, plus its chat
media (media/<group>). Measured
without following links and bounded (safefs.tree_bytes), off the event loop. Over it, a new run
is refused and a live one is stopped. After a run, its leftovers go (remove_leftovers)."""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import trio

from nanoclaw import safefs
from nanoclaw.config import Settings
from nanoclaw.models import ContainerConfig
from nanoclaw.namespaces import GLOBAL
from nanoclaw.supervisor._container import RunState
from nanoclaw.supervisor._types import RunSink

log = logging.getLogger("nanoclaw.supervisor")

MIB = 1024 * 1024
# What sessions/<group> keeps after a run: the runner's conversations and Claude Code's folder.
SESSION_FILE = re.compile(r"^[A-Za-z0-9_-]{1,64}\.json$")
CLAUDE_FOLDER = "claude"


class DiskQuotaExceeded(Exception):
    pass


def writable_trees(settings: Settings, group: str, is_main: bool) -> list[tuple[Path, tuple[str, ...]]]:
    """The host folders a container of group can write (the read-write mounts of every run), and
    its chat media (read-only in the container, but its chats fill it)."""
    trees: list[tuple[Path, tuple[str, ...]]] = [
        (settings.groups_dir, (group,)), (settings.sessions_dir, (group,)), (settings.ipc_dir, (group,)),
        (settings.media_dir, (group,))]
    return trees + [(settings.groups_dir, (GLOBAL,))] if is_main else trees


def _bytes(trees: list[tuple[Path, tuple[str, ...]]]) -> tuple[int, str | None]:
    total = 0
    for root, parts in trees:
        try:
            total += safefs.tree_bytes(root, parts)
        except safefs.TreeTooLarge as exc:
            return total + exc.counted, f"{root.name}/{'/'.join(parts)} holds {exc.strerror}"
    return total, None


async def measure_disk(supervisor, group: str) -> tuple[float, str | None]:
    """The size of the group's trees in MiB (one decimal; remembered for the queue state) and,
    when one is too large to measure, why."""
    ns = await supervisor.namespaces.find(group)
    trees = writable_trees(supervisor.settings, group, bool(ns and ns.isMain))
    total, too_large = await supervisor.offload(_bytes, trees)
    size = round(total / MIB, 1)
    supervisor.disk_mb[group] = size
    return size, too_large


async def over_quota(supervisor, group: str, limit: int) -> str | None:
    """Why the group's trees are over their quota; None when they are not."""
    size, too_large = await measure_disk(supervisor, group)
    if too_large is not None:
        return f"{too_large}, more than the disk quota of {group} measures (containerConfig.maxDiskMb)"
    if size > limit:
        return (f"the folders of {group} (group, sessions, IPC, media) hold {size:g} MiB, over its quota of "
                f"{limit} MiB (containerConfig.maxDiskMb)")
    return None


async def _report(supervisor, active, sink: RunSink, what: str, message: str, notice: str | None) -> None:
    await supervisor.audit.record("warning", "quota", f"{what}: {message}", group=active.group,
                                  details={"diskMb": supervisor.disk_mb.get(active.group)})
    if notice is not None:
        try:
            await sink.notice(active, notice)
        except Exception:  # the limit holds even if the notice cannot be sent
            log.exception("could not tell %s about its disk quota", active.group)


async def check_disk(supervisor, active, config: ContainerConfig, sink: RunSink) -> None:
    """Raise DiskQuotaExceeded (audited; the sink hears a notice, once: not on retries) when the
    group's trees are over its quota."""
    message = await over_quota(supervisor, active.group, config.maxDiskMb)
    if message is None:
        return
    message += "; new runs are refused until files are removed or the quota is raised"
    queue = supervisor.queues.get(active.group)
    first = queue is None or queue.retries == 0
    await _report(supervisor, active, sink, "run refused", message, f"I cannot run now: {message}." if first else None)
    raise DiskQuotaExceeded(message)


async def watch_disk(supervisor, active, config: ContainerConfig, sink: RunSink, state: RunState) -> None:
    """Measure every settings.disk_check_secs while the container lives; past the quota it is
    stopped: the run fails with why, audited, and the sink hears a notice."""
    while True:
        await trio.sleep(supervisor.settings.disk_check_secs)
        message = await over_quota(supervisor, active.group, config.maxDiskMb)
        if message is not None:
            break
    message += "; the container was stopped"
    state.fail("error", message)
    await _report(supervisor, active, sink, "run stopped", message, f"I had to stop: {message}.")
    await supervisor.runtime.stop_container(active.container_name)


def remove_leftovers(settings: Settings, group: str) -> list[str]:
    """After a run (its last IPC sweep done; no other run of the group is live): the group's IPC
    folders, and what sessions/<group> holds
    beyond what a later run resumes (<session>.json conversations, Claude Code's `claude` folder).
    Blocking: run in a thread. Returns what was removed."""
    removed = []
    for root, keep in ((settings.ipc_dir, _nothing), (settings.sessions_dir, _resumable)):
        try:
            fd = safefs.open_dir(root, (group,), create=False)
        except (FileNotFoundError, safefs.UnsafeEntry):
            continue
        try:
            with os.scandir(fd) as entries:
                names = [entry.name for entry in entries if not keep(entry)]
            for name in names:
                safefs.remove(fd, name)
                removed.append(f"{root.name}/{group}/{name}")
        finally:
            os.close(fd)
    return removed


def _nothing(entry: os.DirEntry) -> bool:
    return False


def _resumable(entry: os.DirEntry) -> bool:
    if entry.name == CLAUDE_FOLDER:
        return entry.is_dir(follow_symlinks=False)
    return bool(SESSION_FILE.match(entry.name)) and entry.is_file(follow_symlinks=False)
