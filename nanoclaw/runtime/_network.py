"""The internal network of "proxy-only" containers: no route out, only the credential proxy."""
from __future__ import annotations

import logging

import trio

from nanoclaw.runtime._engine import Runtime, RuntimeUnavailable, bridge_gateway

log = logging.getLogger("nanoclaw.runtime.network")


class InternalNetwork:
    """`<engine> network create --internal nanoclaw-<instance>-internal`, made on first use.

    Its gateway is the host's address on that network: the credential proxy listens there too.
    """

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.name: str | None = None
        self.gateway: str | None = None
        self._lock = trio.Lock()

    async def ensure(self, instance_id: str) -> tuple[str, str]:
        """(network name, gateway address), creating the network when missing."""
        async with self._lock:
            if self.name and self.gateway:
                return self.name, self.gateway
            name = f"nanoclaw-{instance_id}-internal"
            found = await self._inspect(name)
            if found is None:
                done = await self.runtime.cli("network", "create", "--internal",
                                              "--label", f"nanoclaw.instance={instance_id}", name)
                if done.returncode != 0:
                    reason = done.stderr.decode(errors="replace").strip()[-300:]
                    raise RuntimeUnavailable(f"could not create the internal network {name}: {reason}")
                found = await self._inspect(name)
            if found is None or not found[0]:
                raise RuntimeUnavailable(f"network {name} exists but is not internal; remove it "
                                         f"(`{self.runtime.command} network rm {name}`)")
            if not found[1]:
                raise RuntimeUnavailable(f"network {name} has no gateway address for the credential proxy")
            self.name, self.gateway = name, found[1]
            return self.name, self.gateway

    async def _inspect(self, name: str) -> tuple[bool, str | None] | None:
        done = await self.runtime.cli("network", "inspect", name, "--format",
                                      "{{.Internal}}|{{json .IPAM.Config}}")
        if done.returncode != 0:
            return None
        internal, _, ipam = done.stdout.decode(errors="replace").strip().partition("|")
        return internal == "true", bridge_gateway(ipam)

    async def remove(self) -> None:
        """Best effort, at shutdown: the next start makes it again when needed."""
        name, self.name, self.gateway = self.name, None, None
        if name is None:
            return
        with trio.CancelScope(shield=True), trio.move_on_after(20):
            for _ in range(20):  # the engine may still be releasing a stopped container's endpoint
                try:
                    done = await self.runtime.cli("network", "rm", name, timeout=15)
                except RuntimeUnavailable as exc:
                    log.warning("could not remove network %s: %s", name, exc)
                    return
                if done.returncode == 0 or b"active endpoints" not in done.stderr:
                    break
                await trio.sleep(0.5)
            if done.returncode != 0:
                log.warning("could not remove network %s: %s", name, done.stderr.decode(errors="replace")[-200:])
