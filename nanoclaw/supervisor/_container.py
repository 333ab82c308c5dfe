"""One container's life: start it, feed its stdin, stream its frames, keep its deadlines, stop it."""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from nanoclaw.broadcast import Broadcast
from nanoclaw.models import ContainerConfig
from nanoclaw.runtime import Runtime
from nanoclaw.supervisor._output import FrameParser, OutputTooLarge
from nanoclaw.supervisor._types import RunStatus
from nanoclaw.supervisor._usage import Usage

# What `docker run` / `podman run` exit with when the engine, not the container, failed.
ENGINE_ERROR_EXIT = 125
STDERR_CAP = 10 * 1024 * 1024


@dataclass
class RunState:
    status: RunStatus | None = None
    error: str | None = None
    last_error: str | None = None
    exit_code: int | None = None
    results: list = field(default_factory=list)
    delivered: int = 0
    usage: Usage = field(default_factory=Usage)
    # The session the runner last reported (the run's own id until it does).
    session_id: str | None = None

    def fail(self, status: RunStatus, error: str) -> None:
        if self.status is None:
            self.status, self.error = status, error


class Deadlines:
    """The deadlines of one container, in Trio time (the host's clock): its lifetime, fixed at its
    start (nothing the container does moves it), and the idle deadline each result restarts."""

    def __init__(self, hard: float) -> None:
        self.hard = hard
        self.idle: float | None = None
        self.changed = Broadcast()

    def next(self) -> float:
        return min(self.hard, self.idle if self.idle is not None else float("inf"))

    def restart_idle(self, idle: float) -> None:
        self.idle = idle
        self.changed.fire()


@dataclass(frozen=True)
class ContainerHooks:
    """What one container's life reports to the run that started it."""

    # A result or error frame (not progress): awaited before the idle deadline restarts.
    on_frame: Callable[[dict], Awaitable[None]]
    # A progress frame's event: neither resets nor starts a deadline.
    on_progress: Callable[[dict], None]
    # The idle deadline passed: ask the container to finish.
    write_close: Callable[[], Awaitable[None]]
    # Once a turn is done, close at once instead of waiting for follow-ups?
    close_after_turn: Callable[[], bool]
    # The lifetime is over: called before the container is stopped (the run's token dies now).
    expired: Callable[[], None]
    # Runs alongside the container (the disk quota's watch), cancelled when it exits.
    watch: Callable[[], Awaitable[None]]


async def run_container(runtime: Runtime, container_name: str, args: list[str], stdin: bytes,
                        config: ContainerConfig, state: RunState, hooks: ContainerHooks) -> None:
    process = await runtime.start_container(args)
    assert process.stdout is not None  # started with its output piped
    parser = FrameParser()
    timer = Deadlines(hard=trio.current_time() + config.timeoutSecs)
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
                        nursery.start_soon(runtime.stop_container, container_name)
                        return

            async def watch_deadlines():
                while True:
                    with trio.move_on_at(timer.next()):
                        await timer.changed.wait()
                        continue
                    now = trio.current_time()
                    if now >= timer.hard:
                        hooks.expired()
                        state.fail("timeout", f"the container outlived its {config.timeoutSecs} s "
                                              "(containerConfig.timeoutSecs) and was stopped")
                        await runtime.stop_container(container_name)
                        return
                    if timer.idle is not None and now >= timer.idle:
                        timer.idle = None
                        await hooks.write_close()

            nursery.start_soon(feed_stdin)
            nursery.start_soon(drain_stderr)
            nursery.start_soon(watch_deadlines)
            nursery.start_soon(hooks.watch)
            try:
                async for chunk in process.stdout:
                    for frame in parser.feed(chunk):
                        if frame["status"] == "progress":
                            # Progress is not a result: it does not restart the idle deadline.
                            event = frame.get("event")
                            if isinstance(event, dict):
                                hooks.on_progress(event)
                            continue
                        await hooks.on_frame(frame)
                        # Once the turn is done, waiting out the idle timeout would only hold the
                        # group's slot when no follow-up can come or other work waits for it.
                        idle = 0 if hooks.close_after_turn() else config.idleTimeoutSecs
                        timer.restart_idle(trio.current_time() + idle)
            except OutputTooLarge as exc:
                state.fail("error", f"{exc}; the container was stopped")
                nursery.start_soon(runtime.stop_container, container_name)
                # Keep draining meanwhile: the engine cannot stop a container whose output backs up.
                async for _ in process.stdout:
                    pass
            state.exit_code = await process.wait()
            exited = True
            nursery.cancel_scope.cancel()
    finally:
        if not exited:
            with trio.CancelScope(shield=True):
                await runtime.stop_container(container_name)
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
            runtime.mark_down(state.error or "the engine's run command failed")
