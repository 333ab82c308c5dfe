"""Build every service once; start them in order under one nursery."""
from __future__ import annotations

import dataclasses
import logging
from typing import Any

import trio

from nanoclaw.apikeys import ApiKeys
from nanoclaw.audit import Audit
from nanoclaw.authguard import AuthGuard
from nanoclaw.channels import Channels, build_channels
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
from nanoclaw.supervisor import Supervisor

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
    channels: Channels
    events: EventHub
    # Long-lived services in start order (after the store).
    long_lived: list[Any]
    # Built over the others (it reads their statistics): made last, by build().
    metrics: Metrics = dataclasses.field(init=False)

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
            await self.db.close()


def build(settings: Settings, *, clock: Clock | None = None, offload=None,
          runtime: Runtime | None = None) -> Services:
    """Construct every service (no I/O happens here). runtime: a stand-in engine for tests."""
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
    supervisor = Supervisor(settings, db, clock, audit, namespaces, mounts, runtime, offload=offload, proxy=proxy)
    channels = build_channels(settings, db, clock, secrets, audit, namespaces, senders, offload,
                              notify=supervisor.notify_messages, new_session=supervisor.new_session)
    supervisor.subscribe(channels.on_run_event)  # typing indicators, streamed replies
    # The one link made after construction: the supervisor reads chat batches from the channel
    # layer, which notifies the supervisor (issue 17 item 1 turns this into one seam).
    supervisor.messages = channels
    scheduler = Scheduler(db, clock, audit, namespaces, submit=supervisor.submit_task, send_message=channels.send,
                          max_per_group=settings.max_schedules_per_group)
    ipc = IpcWatcher(settings, audit, namespaces, supervisor, scheduler, offload=offload, clock=clock)
    auth_guard = AuthGuard(audit, clock)
    services = Services(
        settings=settings, clock=clock, db=db, secrets=secrets, audit=audit,
        api_keys=ApiKeys(db, clock, open_without_keys=settings.open_without_keys),
        namespaces=namespaces, mounts=mounts, senders=senders, auth_guard=auth_guard, runtime=runtime,
        images=images, supervisor=supervisor, ipc=ipc, scheduler=scheduler, proxy=proxy, channels=channels,
        events=EventHub(clock),
        # Channels start last: inbound messages need every other service ready.
        long_lived=[audit, auth_guard, runtime, images, supervisor, proxy, ipc, scheduler, channels],
    )
    wire_events(services.events, services)
    services.metrics = Metrics(services)
    services.metrics.wire()
    services.long_lived.append(services.metrics)
    return services
