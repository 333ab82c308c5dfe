"""Helpers for the fault-injection tests (tests/test_faults.py).

- `DockerSwitch`: a `docker` wrapper script put first on the server's PATH. It
  forwards to the real CLI, or while `down` exists points it at a socket nobody
  listens on (the real CLI's own "Cannot connect to the Docker daemon"), or while `hold-run` exists
  holds every `docker run` before it starts a container (touching `held`), so a
  test can kill the server in that window. `abort` makes a held run give up
  instead of starting its container.
- `GatedAnthropic`: the fake LLM, but `/v1/messages` answers only once `gate` is set.
- `FaultyTelegram`: the fake Bot API, plus a hold on getUpdates (a held call waits
  before it reads its offset, so the fake has not seen the confirmation) and a
  time window during which getUpdates answers 500.
- `Data`: read-only looks at a server's SQLite store from the test process.
"""
from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import trio
from fakes.anthropic import FakeAnthropic, serve_fake_anthropic
from fakes.telegram import FakeTelegram, _app
from serverproc import cli_env
from fakes import serve_on_loopback

CANNOT_CONNECT = "Cannot connect to the Docker daemon"

_WRAPPER = """#!/bin/sh
# Test wrapper around the real docker CLI (see tests/fault_support.py).
D="{dir}"
if [ -e "$D/down" ]; then
  # The real CLI, pointed at a socket nobody listens on: exactly what a stopped engine looks like.
  DOCKER_HOST="unix://$D/no-engine.sock"
  export DOCKER_HOST
fi
if [ "$1" = "run" ] && [ -e "$D/hold-run" ]; then
  touch "$D/held"
  while [ -e "$D/hold-run" ]; do sleep 0.05; done
  if [ -e "$D/abort" ]; then exit 1; fi
fi
exec "{real}" "$@"
"""


class DockerSwitch:
    def __init__(self, directory: Path) -> None:
        real = shutil.which("docker")
        assert real is not None, "the docker CLI is not installed"
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        script = directory / "docker"
        script.write_text(_WRAPPER.format(dir=directory, real=real))
        script.chmod(0o755)

    def _flag(self, name: str, on: bool) -> None:
        path = self.dir / name
        if on:
            path.touch()
        else:
            path.unlink(missing_ok=True)

    def down(self, on: bool = True) -> None:
        self._flag("down", on)

    def hold_runs(self, on: bool = True) -> None:
        self._flag("hold-run", on)

    def abort_held(self) -> None:
        self._flag("abort", True)

    @property
    def held(self) -> bool:
        return (self.dir / "held").exists()

    def path_env(self) -> str:
        return f"{self.dir}{os.pathsep}{os.environ.get('PATH', '')}"


def server_env(tmp_path: Path, *, switch: DockerSwitch, telegram_url: str, agent_image: str,
               **extra: str) -> dict[str, str]:
    """The environment of a `nanoclaw serve` child with real Docker behind the switch."""
    return cli_env(
        tmp_path,
        PATH=switch.path_env(),
        NANOCLAW_CONTAINER_RUNTIME="docker",
        NANOCLAW_CONTAINER_NETWORK="host",
        NANOCLAW_AGENT_IMAGE=agent_image,
        NANOCLAW_TELEGRAM_API_BASE=telegram_url,
        **extra,
    )


# -- fakes ----------------------------------------------------------------------


class GatedAnthropic(FakeAnthropic):
    """`/v1/messages` is recorded at once but answered only once `gate` is set."""

    def __init__(self, api_key: str | None = None) -> None:
        super().__init__(api_key)
        self.gate = trio.Event()

    async def _answer(self, scope, headers, body, send) -> None:
        if scope["path"] == "/v1/messages":
            await self.gate.wait()
        await super()._answer(scope, headers, body, send)


serve_gated_anthropic = partial(serve_fake_anthropic, kind=GatedAnthropic)


@dataclass
class FaultyTelegram(FakeTelegram):
    # While set and not yet released, getUpdates calls wait here before reading their offset.
    poll_hold: trio.Event | None = None
    polls_held: int = 0
    # getUpdates answers 500 while trio.current_time() < outage_until.
    outage_until: float = float("-inf")
    outage_answers: list[float] = field(default_factory=list)

    def hold_polls(self) -> None:
        self.poll_hold = trio.Event()

    def release_polls(self) -> None:
        if self.poll_hold is not None:
            self.poll_hold.set()
        self.poll_hold = None

    async def handle(self, token: str, method: str, params: dict[str, Any]) -> tuple[dict, int]:
        if method == "getUpdates" and trio.current_time() < self.outage_until:
            self.calls.append(_call(method, token, params))
            self.outage_answers.append(trio.current_time())
            self._touch()
            return {"ok": False, "error_code": 500, "description": "Internal Server Error"}, 500
        if method == "getUpdates" and self.poll_hold is not None:
            hold = self.poll_hold
            self.polls_held += 1
            self._touch()
            await hold.wait()
        return await super().handle(token, method, params)


def _call(method, token, params):
    from fakes.telegram import Call

    return Call(method, token, params, trio.current_time())


async def serve_faulty_telegram(*, task_status=trio.TASK_STATUS_IGNORED) -> None:
    fake = FaultyTelegram()
    async with trio.open_nursery() as nursery:
        fake.url = await serve_on_loopback(nursery, _app(fake))
        task_status.started(fake)


# -- the store, seen from outside -------------------------------------------------


class Data:
    """Short read (and, while the server is down, write) transactions on a server's database."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "nanoclaw.db"

    def _run(self, sql: str, params: tuple = (), write: bool = False) -> list[sqlite3.Row]:
        conn = sqlite3.connect(self.path, timeout=10)
        try:
            conn.row_factory = sqlite3.Row
            rows = conn.execute(sql, params).fetchall()
            if write:
                conn.commit()
            return rows
        finally:
            conn.close()

    async def rows(self, sql: str, *params: Any) -> list[sqlite3.Row]:
        return await trio.to_thread.run_sync(self._run, sql, params)

    async def write(self, sql: str, *params: Any) -> None:
        await trio.to_thread.run_sync(partial(self._run, sql, params, write=True))

    async def instance_id(self) -> str | None:
        if not self.path.exists():
            return None
        rows = await self.rows("SELECT value FROM settings WHERE key = 'instance_id'")
        return rows[0][0] if rows else None


def labelled_containers(instance: str, *, all_states: bool = True) -> list[str]:
    args = ["docker", "ps", "--filter", f"label=nanoclaw.instance={instance}", "--format", "{{.Names}}"]
    if all_states:
        args.insert(2, "-a")
    return subprocess.run(args, capture_output=True, text=True, check=True, timeout=30).stdout.split()


def remove_labelled(instance: str) -> None:
    names = labelled_containers(instance)
    if names:
        subprocess.run(["docker", "rm", "-f", *names], capture_output=True, timeout=60, check=False)


async def poll(predicate, *, timeout: float, interval: float = 0.05, what: str = "condition"):
    """Await predicate() (an async callable) until it returns something truthy; bounded."""
    with trio.move_on_after(timeout):
        while True:
            value = await predicate()
            if value:
                return value
            await trio.sleep(interval)
    raise AssertionError(f"{what}: not reached within {timeout} s")
