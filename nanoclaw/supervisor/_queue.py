"""A group's queue: the work waiting for it and the container it has live."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import trio

from nanoclaw.broadcast import Broadcast
from nanoclaw.supervisor._types import Work


@dataclass
class ActiveRun:
    group: str
    run_id: str
    kind: str  # the work's label
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
    # Runs work from the feed: stays for follow-ups after a turn, retried when it fails.
    fed: bool = False


@dataclass
class GroupQueue:
    name: str
    # Submitted work in the order it runs (by priority, then as submitted).
    pending: list[Work] = field(default_factory=list)
    # The feed has work for this group.
    fed: bool = False
    active: ActiveRun | None = None
    runner: bool = False
    waiting: bool = False
    retries: int = 0
    retry_at: float | None = None
    changed: Broadcast = field(default_factory=Broadcast)
    pipe_lock: trio.Lock = field(default_factory=trio.Lock)

    def has_work(self) -> bool:
        return bool(self.pending or self.fed)

    def add(self, work: Work) -> None:
        at = next((i for i, w in enumerate(self.pending) if w.priority > work.priority), len(self.pending))
        self.pending.insert(at, work)

    def poke(self) -> None:
        self.changed.fire()
