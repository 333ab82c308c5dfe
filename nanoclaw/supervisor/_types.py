"""What other services hand the supervisor, and what they get back."""
from __future__ import annotations

import dataclasses
import uuid
from typing import TYPE_CHECKING, Awaitable, Callable, Literal

import trio

from nanoclaw.models import ContainerConfig

if TYPE_CHECKING:
    from nanoclaw.supervisor._queue import ActiveRun

def new_id() -> str:
    return uuid.uuid4().hex


RunStatus = Literal["success", "error", "timeout", "cancelled"]


@dataclasses.dataclass(frozen=True)
class QueueStatistics:
    """Containers live now, groups waiting for one, and the limit."""

    running: int
    queued: int
    total: int
    max_concurrent: int


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


class RunSink:
    """Whoever asked for a run hears how it goes here (every method does nothing unless overridden).

    Called on the supervisor's task, in order: started, then any number of event, result and notice,
    then finished. An exception is logged (result's: audited as an undelivered result); the run goes on.
    """

    async def started(self, run: ActiveRun) -> None:
        """The run's container is being started (a refused run starts and finishes at once)."""

    def event(self, run: ActiveRun, event: dict) -> None:
        """A progress event as the runner sent it (hostile input: validate before use); must not block."""

    async def result(self, run: ActiveRun, text: str) -> None:
        """A non-empty result text (also why a run was refused, worded for a chat)."""

    async def notice(self, run: ActiveRun, text: str) -> None:
        """Why the run cannot go on now (it will be retried): for a chat to hear, not a result."""

    async def finished(self, run: ActiveRun, outcome: RunOutcome) -> None:
        """The run is over; also handed to whoever waits on its RunHandle."""


@dataclasses.dataclass
class Work:
    """What to run in a group's container, and the sink that hears how it goes."""

    prompt: str
    # The run's label in its record and events: "message" (a chat batch), "task" (a schedule's
    # slot), "adhoc" (on demand). The supervisor records it and never decides by it.
    kind: str = "adhoc"
    sink: RunSink = dataclasses.field(default_factory=RunSink)
    # Where the run's output belongs; None: the group's first chat.
    chat_jid: str | None = None
    # Files that came with the prompt: [{kind, name, mimeType, size, path}] (container paths).
    attachments: list[dict] = dataclasses.field(default_factory=list)
    # Continue (and update) the group's stored session; else session_id when named, or a fresh one.
    group_session: bool = False
    session_id: str | None = None
    # Overrides the namespace's containerConfig.
    container_config: ContainerConfig | None = None
    schedule_id: str | None = None
    # Among a group's submitted work, lower goes first (scheduled tasks 0, on-demand runs 1);
    # work from the feed comes after all of it.
    priority: int = 1
    handle: RunHandle = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.handle = RunHandle(new_id())


# Writes a follow-up (text, attachments) into a live container's input folder.
InputWriter = Callable[[str, list], Awaitable[None]]
# What a feed did with a live run: nothing waits; handed it the work; the work needs a container of its own.
FollowUp = Literal["none", "taken", "own container"]


class WorkFeed:
    """Work that waits outside the supervisor (chat messages): `Supervisor.notify(group)` says the
    group has some; the supervisor pulls it when the group gets a container slot, or offers the
    group's live container (one that ran feed work and takes follow-ups) to take it as input.

    Work from the feed runs after submitted work; when it fails before any result reached its
    sink, the group is retried later (the feed still has it: take it only once it was answered).
    """

    async def next_work(self, group: str) -> Work | None:
        """The group's waiting work, or None when nothing should wake its agent."""
        return None

    async def follow_up(self, run: ActiveRun, write: InputWriter) -> FollowUp:
        """Give what waits for run's group to that live run through write, if it belongs there."""
        return "none"
