"""Helpers for the scheduler tests: the server's services on an injected clock, and a
recording stand-in for the container supervisor (the container runtime)."""
from __future__ import annotations

import datetime as dt

import trio

from conftest import make_settings
from nanoclaw.clock import Clock
from nanoclaw.scheduler import ScheduleCreate
from nanoclaw.services import build
from nanoclaw.supervisor import RunHandle, RunOutcome

UTC = dt.timezone.utc


def unix(*args, tz=UTC) -> float:
    return dt.datetime(*args, tzinfo=tz).timestamp()


def at(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, UTC)


async def inline(fn, *args):
    """Database calls on the event loop, so autojump_clock never jumps while one works."""
    return fn(*args)


class RecordingSupervisor:
    """Stands in for Supervisor.submit: records when each run arrives.

    finish: end each run at once with `outcome` (after passing `results` to
    the work's sink, as the supervisor does); otherwise the run stays open
    until release() (hold=True) or forever (hang=True: submit never returns,
    like a server dying while handing over).
    """

    def __init__(self, clock: Clock, *, hold: bool = False, hang: bool = False,
                 status: str = "success", results: tuple[str, ...] = ("done",), error: str | None = None) -> None:
        self.clock = clock
        self.hold, self.hang = hold, hang
        self.status, self.results, self.error = status, results, error
        self.received: list[tuple[int, str, object]] = []
        self.open: list[RunHandle] = []

    @property
    def times(self) -> list[int]:
        return [ms for ms, _, _ in self.received]

    async def submit(self, group, work):
        self.received.append((round(self.clock.now() * 1000), group, work))
        if self.hang:
            await trio.sleep_forever()
        handle = RunHandle(f"run-{len(self.received)}")
        if self.hold:
            self.open.append(handle)
        else:
            for text in self.results:
                await work.sink.result(None, text)
            handle.finish(RunOutcome(handle.run_id, self.status, self.results[-1] if self.results else None,
                                     self.error, 1234))
        return handle

    def release(self) -> None:
        for handle in self.open:
            handle.finish(RunOutcome(handle.run_id, "success", "late", None, 1))
        self.open.clear()


class SendTo:
    """Stands in for the scheduler's outbox: each text goes to send(chat_jid, text)."""

    def __init__(self, send) -> None:
        self.send = send


class Instance:
    """One server process's services (no HTTP) on the given data dir, startable and stoppable."""

    def __init__(self, nursery, tmp_path, start: float) -> None:
        self.nursery = nursery
        self.settings = make_settings(tmp_path)
        self.start_time = start
        self.services = None

    async def start(self, supervisor: RecordingSupervisor | None = None) -> RecordingSupervisor:
        clock = Clock(start=self.start_time)
        self.services = services = build(self.settings, clock=clock, offload=inline)
        self.supervisor = supervisor or RecordingSupervisor(clock)
        self.supervisor.clock = clock
        services.scheduler.supervisor = self.supervisor
        # The IPC watcher scans its folders every 100 ms: over the days of virtual
        # time these tests cover that is millions of wake-ups, and it plays no part here.
        services.long_lived.remove(services.ipc)
        self.stopped = trio.Event()

        async def _serve(task_status):
            try:
                await services.serve(task_status=task_status)
            finally:
                self.stopped.set()

        self.scope = await self.nursery.start(_serve)
        return self.supervisor

    async def stop(self) -> None:
        self.scope.cancel()
        await self.stopped.wait()

    @property
    def scheduler(self):
        return self.services.scheduler

    def now_ms(self) -> int:
        return round(self.services.clock.now() * 1000)

    async def sleep_until(self, unix_time: float) -> None:
        await self.services.clock.sleep_until(unix_time)

    async def group(self, name: str = "ops", chats: tuple[str, ...] = ("tg:100",), **fields) -> None:
        await self.services.namespaces.create({"name": name, "chatJids": list(chats), **fields})

    async def schedule(self, kind: str, value, **fields):
        body = {"name": "job", "group": "ops", "prompt": "do it", "schedule": {"type": kind, "value": value},
                "timezone": "UTC"} | fields
        return await self.scheduler.create(ScheduleCreate(**body))

    async def logs(self, schedule_id: str) -> list[dict]:
        rows = await self.services.db.fetchall(
            "SELECT * FROM schedule_logs WHERE schedule_id = ? ORDER BY id", (schedule_id,))
        return [dict(r) for r in rows]

    async def row(self, schedule_id: str) -> dict:
        return dict(await self.services.db.fetchone("SELECT * FROM schedules WHERE id = ?", (schedule_id,)))
