"""What other services hand the supervisor, and what they get back."""
from __future__ import annotations

import dataclasses
from typing import Awaitable, Callable, Literal

import trio

from nanoclaw.models import ContainerConfig

RunStatus = Literal["success", "error", "timeout", "cancelled"]
# Called with each non-empty result text as the container prints it.
ResultCallback = Callable[[str], Awaitable[None]]


@dataclasses.dataclass(frozen=True)
class QueueStatistics:
    """Containers live now, groups waiting for one, and the limit."""

    running: int
    queued: int
    total: int
    max_concurrent: int


@dataclasses.dataclass
class TaskRequest:
    """Scheduled-task work for a group: runs before the group's messages, never receives follow-ups."""

    prompt: str
    # "group": continue the group's session; "isolated": a fresh session.
    context_mode: Literal["group", "isolated"] = "isolated"
    chat_jid: str | None = None
    # Overrides the namespace's containerConfig when given.
    container_config: ContainerConfig | None = None
    schedule_id: str | None = None
    on_result: ResultCallback | None = None


@dataclasses.dataclass
class RunOutcome:
    run_id: str
    status: RunStatus
    # The last non-empty result text (None when the agent said nothing).
    result: str | None
    error: str | None
    duration_ms: int


class RunHandle:
    """Returned when work is queued; `await handle.wait()` gives the RunOutcome."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self._done = trio.Event()
        self._outcome: RunOutcome | None = None

    def finish(self, outcome: RunOutcome) -> None:
        self._outcome = outcome
        self._done.set()

    @property
    def outcome(self) -> RunOutcome | None:
        return self._outcome

    async def wait(self) -> RunOutcome:
        await self._done.wait()
        assert self._outcome is not None
        return self._outcome


RunEventType = Literal["queued", "started", "progress", "result", "finished"]


@dataclasses.dataclass(frozen=True)
class RunEvent:
    """What happened to a run, for whoever listens (Supervisor.subscribe).

    data by type: queued {}; started {containerName, sessionId}; progress: the runner's
    progress event object as it sent it (hostile input: validate before use);
    result {text}; finished {status, error, durationMs, result, usage, model} (usage: the run's
    summed tokens, {inputTokens, outputTokens, cacheReadTokens, cacheCreationTokens, totalTokens}).
    """

    type: RunEventType
    run_id: str
    group: str
    kind: str  # "message" | "task" | "adhoc"
    chat_jid: str | None
    data: dict


# A listener must not block: it is called synchronously on the supervisor's task
# (send to a memory channel with send_nowait, or update counters).
RunListener = Callable[[RunEvent], None]


@dataclasses.dataclass
class MessageBatch:
    """Chat messages since a group's cursor, formatted as one prompt."""

    prompt: str
    chat_jid: str
    # Opaque to the supervisor: handed back to MessageSource.advance once output reached the user.
    cursor: object
    # Files that came with the messages: [{kind, name, mimeType, size, path}] (container paths);
    # passed to the runner as stdin / IPC input "attachments".
    attachments: list[dict] = dataclasses.field(default_factory=list)


class MessageSource:
    """What the channel layer provides to the supervisor (interface)."""

    async def pending(self, group: str) -> MessageBatch | None:
        """Messages since the group's cursor, or None when nothing should wake the agent
        (no new messages, or none that satisfies the trigger rules)."""
        raise NotImplementedError

    async def advance(self, group: str, cursor: object) -> None:
        """Move the group's cursor past the batch (called after output reached the user)."""
        raise NotImplementedError

    async def send(self, chat_jid: str, text: str) -> None:
        """Send an agent's text to a chat (stored as a bot message; never triggers an agent)."""
        raise NotImplementedError

    async def send_file(self, chat_jid: str, file, caption: str | None) -> None:
        """Send a file the agent wrote (already read and checked) to a chat."""
        raise NotImplementedError
