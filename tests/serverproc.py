"""Helpers for tests that run the real CLI or server as a separate process.

Process start-up is real time, so every wait here is bounded: a server that does
not come up within STARTUP_TIMEOUT fails the test with its log attached.
"""
from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import trio

from conftest import make_settings, start_server

NANOCLAW = [sys.executable, "-m", "nanoclaw"]
BIN = Path(sys.executable).parent
STARTUP_TIMEOUT = 30
CLI_TIMEOUT = 60


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a child process: its own data and config dirs, no container engine."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NANOCLAW_")}
    env.update(
        NANOCLAW_DATA_DIR=str(tmp_path / "data"),
        NANOCLAW_CONFIG_DIR=str(tmp_path / "config"),
        NANOCLAW_CONTAINER_RUNTIME="none",
        NANOCLAW_PROXY_PORT="0",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


async def run_cli(*args: str, env: dict[str, str], cwd: Path | None = None,
                  command: list[str] = NANOCLAW) -> subprocess.CompletedProcess:
    """Run one CLI command to completion; never raises on a non-zero exit."""
    with trio.fail_after(CLI_TIMEOUT):
        return await trio.run_process(
            [*command, *args], env=env, cwd=cwd, capture_stdout=True, capture_stderr=True, check=False
        )


async def create_api_key(tmp_path: Path, name: str = "tests") -> tuple[str, str]:
    """`nanoclaw api-key create --name NAME` in a subprocess: (key id, raw key)."""
    done = await run_cli("api-key", "create", "--name", name, env=cli_env(tmp_path))
    assert done.returncode == 0, done.stderr.decode()
    out = done.stdout.decode()
    key_id = re.search(r"Created API key (\S+)", out).group(1)
    raw = re.search(r"^(nck_\S+)$", out, re.MULTILINE).group(1)
    return key_id, raw


@dataclass
class ServerProcess:
    process: trio.Process
    url: str
    log_path: Path
    banner: list[str] = field(default_factory=list)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def stop(self, signum: int = signal.SIGINT, timeout: float = 10) -> int:
        """Send signum and wait (bounded) for the exit code."""
        self.process.send_signal(signum)
        with trio.move_on_after(timeout):
            return await self.process.wait()
        raise AssertionError(f"still running {timeout}s after {signal.Signals(signum).name}:\n{self.log()}")

    async def assert_clean_stop(self, signum: int = signal.SIGINT, timeout: float = 10) -> None:
        """signum stops the process within timeout with exit code 0 and no traceback."""
        code = await self.stop(signum, timeout)
        assert code == 0, f"exit code {code} after {signal.Signals(signum).name}:\n{self.log()}"
        assert "Traceback" not in self.log(), self.log()


async def _read_until(stream, pattern: re.Pattern, lines: list[str]) -> re.Match | None:
    buffer = b""
    while True:
        chunk = await stream.receive_some(4096)
        if not chunk:
            return None
        buffer += chunk
        while b"\n" in buffer:
            raw, buffer = buffer.split(b"\n", 1)
            line = raw.decode(errors="replace")
            lines.append(line)
            found = pattern.search(line)
            if found:
                return found


async def wait_healthy(url: str, timeout: float = STARTUP_TIMEOUT) -> httpx.Response:
    """Poll GET /health until it answers 200 (bounded)."""
    with trio.fail_after(timeout):
        async with httpx.AsyncClient(timeout=5) as client:
            while True:
                try:
                    answer = await client.get(url + "/health")
                    if answer.status_code == 200:
                        return answer
                except httpx.TransportError:
                    pass
                await trio.sleep(0.05)


@contextlib.asynccontextmanager
async def spawned(argv: list[str], *, env: dict[str, str], log_path: Path, ready: str, url: str,
                  ready_on: str = "stdout", cwd: Path | None = None):
    """Start argv; wait until a line of ready_on (stdout/stderr) matches ready.

    The group "url" of the first line matching url is the server URL. The
    process is killed on the way out if a test left it running.
    """
    pipe_out = ready_on == "stdout"
    log = open(log_path, "wb")
    process = await trio.lowlevel.open_process(
        argv, env=env, cwd=cwd,
        stdout=subprocess.PIPE if pipe_out else log,
        stderr=log if pipe_out else subprocess.PIPE,
    )
    server = ServerProcess(process, "", log_path)
    try:
        stream = process.stdout if pipe_out else process.stderr
        with trio.move_on_after(STARTUP_TIMEOUT) as waited:
            found = await _read_until(stream, re.compile(ready), server.banner)
        assert not waited.cancelled_caught, f"not ready after {STARTUP_TIMEOUT}s:\n{server.log()}"
        assert found, f"exited before it was ready ({process.poll()}):\n" + "\n".join(server.banner) + server.log()
        urls = [m.group("url") for m in map(re.compile(url).search, server.banner) if m]
        assert urls, f"no URL in {server.banner}"
        server.url = urls[0]
        yield server
    finally:
        if process.poll() is None:
            process.kill()
            with trio.CancelScope(shield=True), trio.move_on_after(10):
                await process.wait()
        log.close()


def serve_process(tmp_path: Path, *args: str, env: dict[str, str] | None = None,
                  command: list[str] = NANOCLAW, log_name: str = "serve.log", cwd: Path | None = None):
    """`nanoclaw serve --port 0 ...` in a subprocess; the URL is read from the start-up banner."""
    return spawned(
        [*command, "serve", "--port", "0", *args],
        env=env or cli_env(tmp_path), log_path=tmp_path / log_name, cwd=cwd,
        ready=r"^Data: ", url=r"serving on (?P<url>http://\S+)",
    )


def loopback(url: str) -> str:
    """A URL printed for a wildcard bind (0.0.0.0 / [::]) as one a client can reach."""
    return re.sub(r"//(0\.0\.0\.0|\[::\])", "//127.0.0.1", url)


@contextlib.asynccontextmanager
async def running_server(settings, **build_kwargs):
    """An in-process server for the length of the block (for restart tests)."""
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, settings, **build_kwargs)
        try:
            yield server
        finally:
            await server.client.aclose()
            nursery.cancel_scope.cancel()


__all__ = [
    "NANOCLAW", "BIN", "cli_env", "run_cli", "create_api_key", "ServerProcess", "spawned",
    "serve_process", "wait_healthy", "loopback", "running_server", "make_settings",
]
