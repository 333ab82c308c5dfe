"""A group's queue: the work waiting for it and the container it has live."""
from __future__ import annotations

import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import trio

from nanoclaw.broadcast import Broadcast
from nanoclaw.supervisor._types import MessageBatch, RunHandle, TaskRequest

Kind = Literal["message", "task", "adhoc"]


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
    changed: Broadcast = field(default_factory=Broadcast)
    pipe_lock: trio.Lock = field(default_factory=trio.Lock)

    def has_work(self) -> bool:
        return bool(self.tasks or self.adhoc or self.messages)

    def poke(self) -> None:
        self.changed.fire()
