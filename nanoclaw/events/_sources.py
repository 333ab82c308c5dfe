"""What feeds the hub: run events, queue and limit changes, schedules, channels, namespace changes,
audit warnings."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nanoclaw.events._hub import EventHub

if TYPE_CHECKING:
    from nanoclaw.audit import Audit
    from nanoclaw.channels import Channels
    from nanoclaw.namespaces import Namespaces
    from nanoclaw.scheduler import Scheduler
    from nanoclaw.supervisor import QueueStatistics, RunEvent, Supervisor

# Audit entries at these severities become live events.
AUDIT_SEVERITIES = {"warning", "violation", "error"}


def wire(hub: EventHub, *, supervisor: Supervisor, scheduler: Scheduler, channels: Channels,
         namespaces: Namespaces, audit: Audit) -> None:
    """Subscribe the hub to every source (once, as the services are built)."""
    last_queue: list[dict] = [{}]

    def queue_changed(stats: QueueStatistics) -> None:
        data = {"running": stats.running, "queued": stats.queued, "total": stats.total,
                "maxConcurrent": stats.max_concurrent}
        if data != last_queue[0]:
            last_queue[0] = data
            hub.publish("queue", data)

    def on_run(event: RunEvent) -> None:
        data: dict[str, Any] = {"runId": event.run_id, "group": event.group, "kind": event.kind,
                                "chatJid": event.chat_jid}
        if event.type == "progress":
            data["event"] = event.data  # the runner's object: the hub bounds its size
        else:
            data.update(event.data)
        hub.publish(f"run.{event.type}", data)
        if event.type in {"queued", "started", "finished"}:
            queue_changed(supervisor.statistics())

    supervisor.subscribe(on_run)
    supervisor.limit_listeners.add(queue_changed)
    scheduler.listeners.add(lambda type_, data: hub.publish(f"schedule.{type_}", data))
    channels.listeners.add(lambda type_, data: hub.publish(f"channel.{type_}", data))

    async def namespaces_changed() -> None:
        hub.publish("namespaces", {})

    namespaces.listeners.append(namespaces_changed)

    def on_audit(entry: dict) -> None:
        if entry["severity"] in AUDIT_SEVERITIES:
            hub.publish("audit", entry)

    audit.listeners.add(on_audit)
