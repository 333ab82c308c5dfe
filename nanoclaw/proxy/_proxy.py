"""The credential proxy service: listeners that start, stop and move live; run tokens; container env."""
from __future__ import annotations

import dataclasses
import logging
from functools import partial
from secrets import token_urlsafe
from typing import Callable, NoReturn, cast

import httpx
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve
from hypercorn.typing import ASGIFramework

from nanoclaw.audit import Audit
from nanoclaw.clock import Clock
from nanoclaw.config import Settings
from nanoclaw.errors import Conflict, NotFound, innermost
from nanoclaw.net import bracketed, host_port
from nanoclaw.proxy._forward import CATEGORY, Forwarder
from nanoclaw.proxy._mappings import PLACEHOLDER, Mapping, MappingStore
from nanoclaw.proxy._meter import Meter, RunMeter
from nanoclaw.secrets import SecretBox
from nanoclaw.store import Database

log = logging.getLogger("nanoclaw.proxy")

LOOPBACK = "127.0.0.1"
PORT_SETTING = "credential_proxy_port"
# After a port change the old listener closes at once, but requests already in
# flight on it (a long LLM stream) get this long to finish.
DRAIN_LIMIT = 600.0
UPSTREAM_TIMEOUT = httpx.Timeout(connect=10.0, read=DRAIN_LIMIT, write=60.0, pool=60.0)


@dataclasses.dataclass
class ProxyStatistics:
    running: bool
    port: int
    bind_host: str
    mapping_count: int
    live_runs: int
    requests_in_flight: int
    # Further addresses listened on (internal networks' gateways), same port.
    extra_hosts: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class _Listener:
    host: str
    port: int
    scope: trio.CancelScope
    shutdown: trio.Event

    def close(self, grace: float) -> None:
        """Stop accepting now; requests in flight get `grace` seconds to finish."""
        self.shutdown.set()
        self.scope.deadline = min(self.scope.deadline, trio.current_time() + grace)


class CredentialProxy:
    """HTTP reverse proxy that lends live container runs an upstream API with the real credential.

    Supports `await nursery.start(proxy.run)`: loads the mappings and, when any
    exists, starts listening before reporting started. The listener runs in a
    cancel scope of its own, so start, stop and port changes never touch the REST API.
    """

    def __init__(self, settings: Settings, db: Database, secrets: SecretBox, clock: Clock, audit: Audit, *,
                 bind_host: Callable[[], str] = lambda: LOOPBACK) -> None:
        self.settings = settings
        self.db = db
        self.audit = audit
        self.store = MappingStore(db, secrets, clock)
        self.meter = Meter(db, clock)
        self._bind_host = bind_host
        self._port = settings.proxy_port
        # Read live by the Forwarder: name -> Mapping, run token -> group.
        self._routes: dict[str, Mapping] = {}
        self._runs: dict[str, str] = {}
        self._listener: _Listener | None = None
        # host -> listener on the main listener's port; hosts wanted even while stopped.
        self._extras: dict[str, _Listener] = {}
        self._extra_hosts: set[str] = set()
        self._forwarder: Forwarder | None = None
        self._nursery: trio.Nursery | None = None
        self._lock = trio.Lock()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> NoReturn:
        saved = await self.db.get_setting(PORT_SETTING)
        if saved is not None:
            self._port = int(saved)
        self._routes.update((m.name, m) for m in await self.store.load())
        async with httpx.AsyncClient(timeout=UPSTREAM_TIMEOUT, trust_env=False,
                                     limits=httpx.Limits(max_connections=256)) as client:
            self._forwarder = Forwarder(self._routes, self._runs, self.audit, client, self.meter)
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                if self._routes:
                    try:
                        await self.start()
                    except Conflict as exc:
                        log.error("credential proxy not started: %s", exc.message)
                        await self.audit.record("error", CATEGORY, f"not started on boot: {exc.message}")
                task_status.started()
                await trio.sleep_forever()

    # -- what the supervisor calls ------------------------------------------

    def register_run(self, group: str, run_id: str | None = None, budget: int | None = None) -> str:
        """A fresh run token for a container run of `group`; valid until unregister_run. Its model
        calls are metered against run_id and refused once the group's month reaches `budget`."""
        token = token_urlsafe(32)
        self._runs[token] = group
        self.meter.runs[token] = RunMeter(run_id, budget)
        return token

    def unregister_run(self, token: str) -> None:
        self._runs.pop(token, None)
        self.meter.runs.pop(token, None)

    def container_env(self, token: str, host_gateway: str) -> dict[str, str]:
        """Per mapping the run's group may use, <NAME>_BASE_URL and <NAME>_API_KEY (the
        placeholder with the run token).

        Empty when the proxy is not running: the container then has no way to the APIs.
        """
        group = self._runs.get(token)
        if self._listener is None or group is None:
            return {}
        host = bracketed(host_gateway)
        key = f"{PLACEHOLDER}.{token}"
        env: dict[str, str] = {}
        for mapping in self._routes.values():
            if not mapping.allows_group(group):
                continue
            base = f"http://{host}:{self._listener.port}/{mapping.path_segment}"
            env[f"{mapping.env_prefix}_BASE_URL"] = base
            env[f"{mapping.env_prefix}_API_KEY"] = key
            if mapping.is_anthropic:
                env["ANTHROPIC_BASE_URL"] = base
                env["ANTHROPIC_API_KEY"] = key
        return env

    # -- what the API calls -------------------------------------------------

    def statistics(self) -> ProxyStatistics:
        listener = self._listener
        return ProxyStatistics(
            running=listener is not None,
            port=listener.port if listener else self._port,
            bind_host=listener.host if listener else self._bind_host(),
            mapping_count=len(self._routes),
            live_runs=len(self._runs),
            requests_in_flight=self._forwarder.in_flight if self._forwarder else 0,
            extra_hosts=sorted(self._extras),
        )

    async def wait_idle(self) -> None:
        """Until no proxied request is in flight (each finished one is audited by then)."""
        if self._forwarder is not None:
            await self._forwarder.wait_idle()

    def mappings(self) -> list[Mapping]:
        return list(self._routes.values())

    async def add_mapping(self, name: str, upstream_url: str, credential_type: str, credential: str, *,
                          groups: list[str] | None = None, allowed_paths: list[str] | None = None) -> Mapping:
        mapping = await self.store.add(name, upstream_url, credential_type, credential, groups=groups,
                                       allowed_paths=allowed_paths)
        self._routes[mapping.name] = mapping
        await self.audit.record("info", CATEGORY, f"mapping {name!r} added ({credential_type}, "
                                f"upstream {mapping.upstream_url})")
        return mapping

    async def remove_mapping(self, mapping_id: str) -> None:
        if not await self.store.delete(mapping_id):
            raise NotFound(f"No credential mapping with id {mapping_id!r}")
        for name, mapping in list(self._routes.items()):
            if mapping.id == mapping_id:
                del self._routes[name]
                await self.audit.record("info", CATEGORY, f"mapping {name!r} removed")

    async def start(self) -> None:
        """Start listening on the configured port; nothing happens when already running."""
        async with self._lock:
            if self._listener is None:
                self._listener = await self._open(self._port)
                await self.audit.record("info", CATEGORY, f"listening on {self._listener.host}:{self._listener.port}")
                await self._open_extras()

    async def listen_also(self, host: str) -> None:
        """Also listen on `host` (an internal network's gateway) on the same port, now when
        running and on every later start or port change."""
        async with self._lock:
            self._extra_hosts.add(host)
            await self._open_extras()

    async def _open_extras(self) -> None:
        if self._listener is None:
            return
        for host in sorted(self._extra_hosts - set(self._extras) - {self._listener.host}):
            self._extras[host] = await self._open(self._listener.port, host)
            await self.audit.record("info", CATEGORY, f"listening also on {host}:{self._listener.port}")

    def _close_extras(self, grace: float) -> None:
        for listener in self._extras.values():
            listener.close(grace)
        self._extras.clear()

    async def stop(self) -> None:
        """Stop listening now; requests in flight get the graceful timeout to finish."""
        async with self._lock:
            if self._listener is not None:
                self._listener.close(self.settings.graceful_timeout)
                self._listener = None
                self._close_extras(self.settings.graceful_timeout)
                await self.audit.record("info", CATEGORY, "stopped")

    async def set_port(self, port: int) -> None:
        """Move to `port` (0: any free port). When running, the new listener is up
        before the old one closes; requests in flight on the old port finish there."""
        async with self._lock:
            old = self._listener
            if old is not None and port != old.port:
                self._listener = await self._open(port)
                old.close(DRAIN_LIMIT)
                self._close_extras(DRAIN_LIMIT)
                await self._open_extras()
                await self.audit.record("info", CATEGORY, f"moved from port {old.port} to {self._listener.port}")
            self._port = port
            await self.db.set_setting(PORT_SETTING, str(port))

    # -- listeners ----------------------------------------------------------

    async def _open(self, port: int, host: str | None = None) -> _Listener:
        assert self._nursery is not None, "the proxy service is not running"
        host = host or self._bind_host()
        failure = None
        try:
            return await self._nursery.start(self._serve, host, port)
        except* OSError as group:
            failure = innermost(group)
        reason = getattr(failure, "strerror", None) or str(failure)
        raise Conflict(f"The credential proxy cannot listen on {host}:{port}: {reason}", code="PORT_UNAVAILABLE")

    async def _serve(self, host: str, port: int, *, task_status: trio.TaskStatus[_Listener]) -> None:
        config = HypercornConfig()
        config.bind = [host_port(host, port)]
        # Draining is governed by the listener's own cancel scope (see _Listener.close).
        config.graceful_timeout = DRAIN_LIMIT
        config.accesslog = None
        config.errorlog = logging.getLogger("nanoclaw.proxy.http")
        # The upstream's own Date and Server headers pass through.
        config.include_date_header = False
        config.include_server_header = False
        shutdown = trio.Event()
        listener = None
        forwarder = self._forwarder
        assert forwarder is not None, "run() makes it before any listener starts"
        with trio.CancelScope() as scope:
            try:
                async with trio.open_nursery() as nursery:
                    binds = await nursery.start(partial(hypercorn_serve, cast(ASGIFramework, forwarder), config,
                                                        shutdown_trigger=shutdown.wait))
                    listener = _Listener(host, int(binds[0].rsplit(":", 1)[1]), scope, shutdown)
                    task_status.started(listener)
            except Exception:
                if listener is None:
                    raise
                # A restartable service: log and audit, then report not running.
                log.exception("credential proxy listener on %s:%s failed", host, listener.port)
                if self._listener is listener:
                    self._listener = None
                if self._extras.get(host) is listener:
                    del self._extras[host]
                await self.audit.record("error", CATEGORY, f"listener on port {listener.port} failed; "
                                        "POST /container/credential-proxy/start to restart it")
