"""Build every service once; start them in order under one nursery."""
from __future__ import annotations

import dataclasses
import logging
from typing import Any

import trio

from nanoclaw.apikeys import ApiKeys
from nanoclaw.audit import Audit
from nanoclaw.authguard import AuthGuard
from nanoclaw.channels import ChatFeed, ChatStore, Channels, Outbox, Router, platform_adapters
from nanoclaw.clock import Clock
from nanoclaw.config import Settings
from nanoclaw.events import EventHub, wire_events
from nanoclaw.filemodes import private_dir, too_open
from nanoclaw.namespaces import Namespaces
from nanoclaw.scheduler import Scheduler
from nanoclaw.ipc import IpcWatcher
from nanoclaw.metrics import Metrics
from nanoclaw.proxy import CredentialProxy
from nanoclaw.runtime import ImageBuilder, Runtime
from nanoclaw.secrets import SecretBox
from nanoclaw.security.mounts import MountPolicy
from nanoclaw.security.senders import SenderAllowlist
from nanoclaw.store import Database
from nanoclaw.supervisor import Supervisor, WorkFeed

log = logging.getLogger("nanoclaw")


@dataclasses.dataclass
class Services:
    settings: Settings
    clock: Clock
    db: Database
    secrets: SecretBox
    audit: Audit
    api_keys: ApiKeys
    namespaces: Namespaces
    mounts: MountPolicy
    senders: SenderAllowlist
    auth_guard: AuthGuard
    runtime: Runtime
    images: ImageBuilder
    supervisor: Supervisor
    ipc: IpcWatcher
    scheduler: Scheduler
    proxy: CredentialProxy
    outbox: Outbox
    feed: WorkFeed
    channels: Channels
    events: EventHub
    metrics: Metrics
    # Long-lived services in start order (after the store).
    long_lived: list[Any]

    async def serve(self, *, check=None,
                    task_status: trio.TaskStatus[trio.CancelScope] = trio.TASK_STATUS_IGNORED) -> None:
        """Open the store, start every long-lived service in order, run until cancelled.

        Supports `scope = await nursery.start(services.serve)`; cancelling the returned
        scope stops the services (containers are stopped by name), then closes the store.
        """
        settings = self.settings
        for warning in too_open(settings.data_dir, settings.config_dir, settings.database_path):
            log.warning("%s", warning)
        private_dir(settings.config_dir)
        await self.db.open()
        try:
            if check is not None:
                await check()  # may refuse to go on (main: an insecure bind)
            await self.namespaces.remove_unfinished_writes()  # before anything writes again
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:
                    for service in self.long_lived:
                        await nursery.start(service.run)
                    task_status.started(scope)
        finally:
            await self.outbox.aclose()  # only now: every service sends through it until it stopped
            await self.db.close()


def build(settings: Settings, *, clock: Clock | None = None, offload=None, runtime: Runtime | None = None,
          feed: WorkFeed | None = None, outbox: Outbox | None = None) -> Services:
    """Construct every service in dependency order (no I/O happens here). runtime, feed and
    outbox: stand-ins for tests (a fake engine; chat work and sends reduced to lists)."""
    clock = clock or Clock()
    db = Database(settings.database_path, offload=offload)
    secrets = SecretBox(settings.config_dir)
    audit = Audit(db, clock, secrets, retention_days=settings.audit_retention_days)
    namespaces = Namespaces(settings, db, clock, audit, offload=offload)
    mounts = MountPolicy(settings, audit)
    senders = SenderAllowlist(db, audit)
    runtime = runtime or Runtime(settings)
    images = ImageBuilder(runtime, settings.agent_base_image, work_dir=settings.data_dir / "image-build")
    proxy = CredentialProxy(settings, db, secrets, clock, audit, bind_host=runtime.proxy_bind_host)
    chats = ChatStore(db, clock)
    real_outbox = Outbox(chats, namespaces, audit, platform_adapters(settings))
    outbox = outbox or real_outbox
    feed = feed or ChatFeed(chats, namespaces, outbox)
    supervisor = Supervisor(settings, db, clock, audit, namespaces, mounts, runtime, proxy, feed, offload=offload)
    supervisor.subscribe(real_outbox.activity.on_run_event)  # typing indicators, streamed replies
    router = Router(chats, namespaces, senders, audit, supervisor, outbox, real_outbox.activity)
    channels = Channels(chats, router, real_outbox, secrets, audit, clock, media_dir=settings.media_dir,
                        offload=offload)
    scheduler = Scheduler(db, clock, audit, namespaces, supervisor, outbox,
                          max_per_group=settings.max_schedules_per_group)
    ipc = IpcWatcher(settings, audit, namespaces, supervisor, scheduler, outbox, offload=offload, clock=clock)
    events = EventHub(clock)
    wire_events(events, supervisor=supervisor, scheduler=scheduler, channels=channels, namespaces=namespaces,
                audit=audit)
    metrics = Metrics(clock, audit, supervisor, scheduler, channels, events)
    auth_guard = AuthGuard(audit, clock)
    return Services(
        settings=settings, clock=clock, db=db, secrets=secrets, audit=audit,
        api_keys=ApiKeys(db, clock, open_without_keys=settings.open_without_keys),
        namespaces=namespaces, mounts=mounts, senders=senders, auth_guard=auth_guard, runtime=runtime,
        images=images, supervisor=supervisor, ipc=ipc, scheduler=scheduler, proxy=proxy, outbox=real_outbox,
        feed=feed, channels=channels, events=events, metrics=metrics,
        # The outbox's HTTP client serves the channels too; channels start last: inbound
        # messages need every other service ready.
        long_lived=[audit, auth_guard, runtime, images, real_outbox, supervisor, proxy, ipc, scheduler, channels,
                    metrics],
    )
