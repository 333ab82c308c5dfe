"""The group folder's disk quota (containerConfig.maxDiskMb): measured without following links,
off the event loop; over it, new runs of the group are refused."""
from __future__ import annotations

import logging

from nanoclaw import safefs
from nanoclaw.models import ContainerConfig
from nanoclaw.supervisor._types import RunSink

log = logging.getLogger("nanoclaw.supervisor")


class DiskQuotaExceeded(Exception):
    pass


async def measure_disk(supervisor, group: str) -> float:
    """The group folder's size in MiB (one decimal); remembered for the queue state."""
    folder = supervisor.settings.groups_dir / group
    size = round(await supervisor.offload(safefs.tree_bytes, folder) / (1024 * 1024), 1)
    supervisor.disk_mb[group] = size
    return size


async def check_disk(supervisor, active, config: ContainerConfig, sink: RunSink) -> None:
    """Raise DiskQuotaExceeded (audited; the sink hears a notice, once: not on retries) when the
    group folder is over its quota."""
    group = active.group
    size = await measure_disk(supervisor, group)
    limit = config.maxDiskMb
    if size <= limit:
        return
    message = (f"the group folder of {group} holds {size:g} MiB, over its quota of {limit} MiB "
               "(containerConfig.maxDiskMb); new runs are refused until files are removed or the quota is raised")
    await supervisor.audit.record("warning", "quota", f"run refused: {message}", group=group,
                                  details={"diskMb": size, "maxDiskMb": limit})
    queue = supervisor.queues.get(group)
    if queue is None or queue.retries == 0:
        try:
            await sink.notice(active, f"I cannot run now: {message}.")
        except Exception:  # the refusal stands even if the notice cannot be sent
            log.exception("could not tell %s about its disk quota", group)
    raise DiskQuotaExceeded(message)
