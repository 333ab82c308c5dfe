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
    runtime: Runtime
    images: ImageBuilder
    supervisor: Supervisor
    ipc: IpcWatcher
    scheduler: Scheduler
    proxy: CredentialProxy
    channels: Channels
    # Long-lived services in start order (after the store).
    long_lived: list[Any]

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
    namespaces = Namespaces(settings, db, clock, audit, offload=offload)
    mounts = MountPolicy(settings, audit)
    senders = SenderAllowlist(db, audit)
    runtime = runtime or Runtime(settings)
    images = ImageBuilder(runtime, settings.agent_base_image, work_dir=settings.data_dir / "image-build")
    proxy = CredentialProxy(settings, db, secrets, clock, audit, bind_host=runtime.proxy_bind_host)
    supervisor = Supervisor(settings, db, clock, audit, namespaces, mounts, runtime, offload=offload, proxy=proxy)
    channels = build_channels(settings, db, clock, secrets, audit, namespaces, senders,
                              notify=supervisor.notify_messages, new_session=supervisor.new_session)
    # The one link made after construction: the supervisor reads chat batches from the channel
    # layer, which notifies the supervisor (issue 17 item 1 turns this into one seam).
    supervisor.messages = channels
    scheduler = Scheduler(db, clock, audit, namespaces, submit=supervisor.submit_task, send_message=channels.send,
                          max_per_group=settings.max_schedules_per_group)
    ipc = IpcWatcher(settings, audit, namespaces, supervisor, scheduler, offload=offload, clock=clock)
    return Services(
        settings=settings, clock=clock, db=db, secrets=secrets, audit=audit,
        api_keys=ApiKeys(db, clock, open_without_keys=settings.open_without_keys),
        namespaces=namespaces, mounts=mounts, senders=senders, runtime=runtime, images=images,
        supervisor=supervisor, ipc=ipc, scheduler=scheduler, proxy=proxy, channels=channels,
        # Channels start last: inbound messages need every other service ready.
        long_lived=[runtime, images, supervisor, proxy, ipc, scheduler, channels],
    )
