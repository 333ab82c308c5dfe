"""Build every service once; start them in order under one nursery."""
from __future__ import annotations

import dataclasses
import logging
from typing import Any

import trio

from nanoclaw.apikeys import ApiKeys
from nanoclaw.audit import Audit
from nanoclaw.channels import Channels, build_channels
from nanoclaw.clock import Clock
from nanoclaw.config import Settings
from nanoclaw.namespaces import Namespaces
from nanoclaw.scheduler import Scheduler
from nanoclaw.ipc import IpcWatcher
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
    runtime: Runtime | None = None
    images: ImageBuilder | None = None
    supervisor: Supervisor | None = None
    ipc: IpcWatcher | None = None
    scheduler: Scheduler | None = None
    proxy: CredentialProxy | None = None
    channels: Channels | None = None
    # Long-lived services in start order (after the store); filled by build().
    long_lived: list[Any] = dataclasses.field(default_factory=list)

    async def serve(self, *, check=None,
                    task_status: trio.TaskStatus[trio.CancelScope] = trio.TASK_STATUS_IGNORED) -> None:
        """Open the store, start every long-lived service in order, run until cancelled.

        Supports `scope = await nursery.start(services.serve)`; cancelling the returned
        scope stops the services (containers are stopped by name), then closes the store.
        """
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
    audit = Audit(db, clock, secrets)
    services = Services(
        settings=settings,
        clock=clock,
        db=db,
        secrets=secrets,
        audit=audit,
        api_keys=ApiKeys(db, clock, open_without_keys=settings.open_without_keys),
        namespaces=Namespaces(settings, db, clock, audit, offload=offload),
        mounts=MountPolicy(settings, audit),
        senders=SenderAllowlist(db, audit),
    )
    services.runtime = runtime or Runtime(settings)
    services.images = ImageBuilder(services.runtime, settings.agent_base_image,
                                   work_dir=settings.data_dir / "image-build")
    services.proxy = CredentialProxy(settings, db, secrets, clock, audit,
                                     bind_host=services.runtime.proxy_bind_host)
    services.supervisor = Supervisor(settings, db, clock, audit, services.namespaces, services.mounts,
                                     services.runtime, offload=offload, proxy=services.proxy)
    services.ipc = IpcWatcher(settings, audit, services.namespaces, services.supervisor, offload=offload,
                              clock=clock)
    services.long_lived += [services.runtime, services.images, services.supervisor, services.proxy,
                            services.ipc]
    services.channels = build_channels(settings, db, clock, secrets, audit, services.namespaces, services.senders)
    services.supervisor.messages = services.channels
    services.channels.router.notify = services.supervisor.notify_messages
    services.channels.router.new_session = services.supervisor.new_session
    services.scheduler = Scheduler(db, clock, audit, services.namespaces, submit=services.supervisor.submit_task,
                                   send_message=services.channels.send,
                                   max_per_group=settings.max_schedules_per_group)
    services.ipc.scheduler = services.scheduler
    # Channels start last: inbound messages need every other service ready.
    services.long_lived += [services.scheduler, services.channels]
    return services
