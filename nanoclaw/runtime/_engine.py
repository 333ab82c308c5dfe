from __future__ import annotations

import ipaddress
import json
import logging
import shutil
import subprocess
import sys
from typing import NoReturn
from dataclasses import dataclass, field

import trio

from nanoclaw.broadcast import Broadcast
from nanoclaw.config import Settings
from nanoclaw.errors import Unavailable

log = logging.getLogger("nanoclaw.runtime")

DETECT_TIMEOUT = 10.0
WATCHDOG_MAX_BACKOFF = 60.0
CLI_TIMEOUT = 30.0

# backend name -> (CLI binary, arguments that print the engine version)
BACKENDS = {
    "apple_container": ("container", ["system", "status"]),
    "docker": ("docker", ["info", "--format", "{{.ServerVersion}}"]),
    "podman": ("podman", ["info", "--format", "{{.Version.Version}}"]),
}
INSTALL_HINT = (
    "No container runtime found. Install Docker (apt-get install docker.io, then start dockerd), "
    "Podman, or on macOS Apple's `container` CLI; or set NANOCLAW_CONTAINER_RUNTIME."
)


def bridge_gateway(ipam_json: str) -> str | None:
    """The bridge network's gateway; engines that list only the subnet use its first address."""
    try:
        configs = json.loads(ipam_json) or []
    except ValueError:
        return None
    for config in configs:
        if config.get("Gateway"):
            return config["Gateway"]
        if config.get("Subnet"):
            try:
                return str(next(ipaddress.ip_network(config["Subnet"], strict=False).hosts()))
            except (ValueError, StopIteration):
                continue
    return None


class RuntimeUnavailable(Unavailable):
    code = "RUNTIME_UNAVAILABLE"


@dataclass
class RuntimeState:
    available: bool = False
    backend: str | None = None
    version: str | None = None
    host_gateway: str | None = None
    extra_run_args: list[str] = field(default_factory=list)
    message: str = "Runtime detection has not run yet"


class ContainerProcess:
    """A running `<runtime> run -i ...`: stdin, stdout, stderr streams and wait()."""

    def __init__(self, process: trio.Process) -> None:
        self._process = process
        self.stdin = process.stdin
        self.stdout = process.stdout
        self.stderr = process.stderr

    async def wait(self) -> int:
        return await self._process.wait()

    def kill(self) -> None:
        self._process.kill()


class Runtime:
    """The detected engine. Long-lived: `await nursery.start(runtime.run)` detects once,
    then a watchdog re-detects with backoff while the engine is down."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.state = RuntimeState()
        self._recheck = trio.Event()
        self._changed = Broadcast()

    # -- detection -----------------------------------------------------

    @property
    def command(self) -> str:
        if self.state.backend is None:
            raise RuntimeUnavailable(self.state.message)
        return BACKENDS[self.state.backend][0]

    def candidates(self) -> list[str]:
        configured = self.settings.container_runtime
        if configured == "none":
            return []
        if configured:
            return [configured]
        order = ["docker", "podman"]
        if sys.platform == "darwin":
            order.insert(0, "apple_container")
        return order

    async def detect(self) -> RuntimeState:
        problems = []
        for backend in self.candidates():
            binary, version_args = BACKENDS[backend]
            if shutil.which(binary) is None:
                problems.append(f"{binary}: not installed")
                continue
            try:
                with trio.fail_after(DETECT_TIMEOUT):
                    done = await trio.run_process([binary, *version_args], capture_stdout=True,
                                                  capture_stderr=True, check=False)
            except trio.TooSlowError:
                problems.append(f"{binary}: no answer within {DETECT_TIMEOUT:.0f} s")
                continue
            if done.returncode != 0:
                reason = done.stderr.decode(errors="replace").strip().splitlines()
                why = reason[-1] if reason else f"exit {done.returncode}"
                problems.append(f"{binary}: engine not reachable ({why})")
                continue
            version = done.stdout.decode(errors="replace").strip().splitlines()
            state = RuntimeState(available=True, backend=backend, version=version[0] if version else None)
            await self._networking(state)
            state.message = f"{backend} runtime detected" + (f" (version {state.version})" if state.version else "")
            return state
        if self.settings.container_runtime == "none":
            return RuntimeState(message="Containers are disabled (NANOCLAW_CONTAINER_RUNTIME=none)")
        return RuntimeState(message=INSTALL_HINT + (" Tried: " + "; ".join(problems) if problems else ""))

    async def _networking(self, state: RuntimeState) -> None:
        network = self.settings.container_network
        if network == "none":
            state.host_gateway = None
        elif network == "host" or state.backend == "apple_container":
            state.host_gateway = "127.0.0.1" if network == "host" else "192.168.64.1"
        else:
            assert state.backend is not None  # called once a backend answered
            binary = BACKENDS[state.backend][0]
            gateway = None
            try:
                with trio.fail_after(DETECT_TIMEOUT):
                    done = await trio.run_process(
                        [binary, "network", "inspect", "bridge", "--format", "{{json .IPAM.Config}}"],
                        capture_stdout=True, capture_stderr=True, check=False)
                if done.returncode == 0:
                    gateway = bridge_gateway(done.stdout.decode())
            except trio.TooSlowError:
                pass
            if gateway:
                state.host_gateway = gateway
            else:
                state.host_gateway = "host.docker.internal"
                state.extra_run_args = ["--add-host", "host.docker.internal:host-gateway"]

    def proxy_bind_host(self) -> str:
        """Where the credential proxy should listen: reachable by containers, nothing else."""
        gateway = self.state.host_gateway
        if self.settings.container_network == "bridge" and gateway and gateway[0].isdigit():
            return gateway
        return "127.0.0.1"

    def info(self) -> dict:
        return {
            "available": self.state.available,
            "backend": self.state.backend,
            "version": self.state.version,
            "networking": {
                "mode": self.settings.container_network,
                "hostGateway": self.state.host_gateway,
                "extraRunArgs": list(self.state.extra_run_args),
            },
            "message": self.state.message,
        }

    def mark_down(self, reason: str) -> None:
        """A CLI call failed as if the engine were gone: let the watchdog re-check now."""
        if self.state.available:
            log.warning("container engine looks down: %s", reason)
        self._recheck.set()

    async def wait_available(self) -> None:
        while not self.state.available:
            await self._changed.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> NoReturn:
        """Detect, report ready, then re-detect with capped backoff while the engine is down."""
        self._set(await self.detect())
        task_status.started()
        backoff = 1.0
        while True:
            if self.state.available:
                backoff = 1.0
                await self._recheck.wait()
            else:
                with trio.move_on_after(backoff):
                    await self._recheck.wait()
                backoff = min(backoff * 2, WATCHDOG_MAX_BACKOFF)
            self._recheck = trio.Event()
            self._set(await self.detect())

    def _set(self, state: RuntimeState) -> None:
        if state.available != self.state.available:
            log.info("container runtime: %s", state.message)
        self.state = state
        self._changed.fire()

    # -- CLI -----------------------------------------------------------

    async def cli(self, *args: str, timeout: float = CLI_TIMEOUT, stdin: bytes | None = None
                  ) -> subprocess.CompletedProcess:
        """Run `<runtime> args...`; a timeout or a missing engine raises RuntimeUnavailable."""
        command = [self.command, *args]
        try:
            with trio.fail_after(timeout):
                return await trio.run_process(command, stdin=stdin or b"", capture_stdout=True,
                                              capture_stderr=True, check=False)
        except trio.TooSlowError:
            self.mark_down(f"`{' '.join(command[:3])}` took over {timeout:.0f} s")
            raise RuntimeUnavailable(f"the container engine did not answer within {timeout:.0f} s") from None
        except OSError as exc:
            self.mark_down(str(exc))
            raise RuntimeUnavailable(f"cannot run {command[0]}: {exc.strerror}") from None

    async def start_container(self, args: list[str]) -> ContainerProcess:
        process = await trio.lowlevel.open_process(
            [self.command, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        return ContainerProcess(process)

    async def stop_container(self, name: str, *, grace: int = 1) -> None:
        """Stop by name (`stop -t grace`, then `kill`), shielded so cancellation cannot skip it."""
        with trio.CancelScope(shield=True):
            with trio.move_on_after(grace + 10):
                done = await self.cli("stop", "-t", str(grace), name, timeout=grace + 8)
                if done.returncode == 0:
                    return
            with trio.move_on_after(10):
                await self.cli("kill", name, timeout=8)

    async def remove_labelled(self, label: str) -> list[str]:
        """Force-remove every container carrying label (key=value); returns their names."""
        done = await self.cli("ps", "-a", "--filter", f"label={label}", "--format", "{{.Names}}")
        names = done.stdout.decode().split()
        if names:
            await self.cli("rm", "-f", *names)
        return names

    async def image_exists(self, tag: str) -> bool:
        done = await self.cli("image", "inspect", tag)
        return done.returncode == 0
