"""What feeds the hub: run events, queue and limit changes, schedules, channels, namespace changes,
audit warnings."""
from __future__ import annotations

from typing import TYPE_CHECKING

from nanoclaw.events._hub import EventHub

if TYPE_CHECKING:
    from nanoclaw.services import Services
    from nanoclaw.supervisor import QueueStatistics, RunEvent

# Audit entries at these severities become live events.
AUDIT_SEVERITIES = {"warning", "violation", "error"}


def wire(hub: EventHub, services: Services) -> None:
    """Subscribe the hub to every source the services have (call once, after build)."""
    supervisor = services.supervisor
    last_queue: list[dict] = [{}]

    def queue_changed(stats: QueueStatistics) -> None:
        data = {"running": stats.running, "queued": stats.queued, "total": stats.total,
                "maxConcurrent": stats.max_concurrent}
        if data != last_queue[0]:
            last_queue[0] = data
            hub.publish("queue", data)

    if supervisor is not None:
        def on_run(event: RunEvent) -> None:
            data = {"runId": event.run_id, "group": event.group, "kind": event.kind, "chatJid": event.chat_jid}
            if event.type == "progress":
                data["event"] = event.data  # the runner's object: the hub bounds its size
            else:
                data.update(event.data)
            hub.publish(f"run.{event.type}", data)
            if event.type in {"queued", "started", "finished"}:
                queue_changed(supervisor.statistics())

        supervisor.subscribe(on_run)
        supervisor.limit_listeners.add(queue_changed)
    if services.scheduler is not None:
        services.scheduler.listeners.add(lambda type_, data: hub.publish(f"schedule.{type_}", data))
    if services.channels is not None:
        services.channels.listeners.add(lambda type_, data: hub.publish(f"channel.{type_}", data))

    async def namespaces_changed() -> None:
        hub.publish("namespaces", {})

    services.namespaces.listeners.append(namespaces_changed)

    def on_audit(entry: dict) -> None:
        if entry["severity"] in AUDIT_SEVERITIES:
            hub.publish("audit", entry)

    services.audit.listeners.add(on_audit)
