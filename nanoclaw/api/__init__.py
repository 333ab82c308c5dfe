"""REST API: one blueprint per endpoint group of the spec."""
from nanoclaw.api import audit, channels, health, ipc, monitoring, mounts, namespaces, proxy, queue, runs, runtime, senders
from nanoclaw.api import events, schedules

__all__ = ["BLUEPRINTS"]

BLUEPRINTS = [
    health.bp,
    namespaces.bp,
    mounts.bp,
    senders.bp,
    audit.bp,
    runtime.bp,
    ipc.bp,
    queue.bp,
    runs.bp,
    monitoring.bp,
    proxy.bp,
    channels.bp,
    schedules.bp,
    events.bp,
]
