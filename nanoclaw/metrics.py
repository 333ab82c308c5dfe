"""Prometheus metrics (GET /metrics): one CollectorRegistry per Services, fed by the event sources."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

import trio
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

if TYPE_CHECKING:
    from nanoclaw.audit import Audit
    from nanoclaw.channels import Channels
    from nanoclaw.clock import Clock
    from nanoclaw.events import EventHub
    from nanoclaw.scheduler import Scheduler
    from nanoclaw.supervisor import RunEvent, Supervisor

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DURATION_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
LATENESS_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 30, 60, 300, 3600)
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5)
LAG_INTERVAL = 1.0
TOKEN_TYPES = {"inputTokens": "input", "outputTokens": "output", "cacheReadTokens": "cache_read",
               "cacheCreationTokens": "cache_creation"}
PROXY_CATEGORY = "credential-proxy"


class Metrics:
    """Counters and histograms updated by listeners; gauges read from the services at scrape time.

    A long-lived service too: run() measures the event loop's lag.
    """

    def __init__(self, clock: Clock, audit: Audit, supervisor: Supervisor, scheduler: Scheduler,
                 channels: Channels, events: EventHub) -> None:
        self.clock = clock
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.runs = Counter("nanoclaw_runs", "Finished agent runs", ["group", "kind", "outcome"], registry=registry)
        self.turn_duration = Histogram("nanoclaw_turn_duration_seconds",
                                       "Time from a container's start (or its previous result) to each result",
                                       ["kind"], buckets=DURATION_BUCKETS, registry=registry)
        self.container_lifetime = Histogram("nanoclaw_container_lifetime_seconds",
                                            "Time from a container's start to its run's end", ["kind"],
                                            buckets=DURATION_BUCKETS, registry=registry)
        self.schedule_lateness = Histogram("nanoclaw_schedule_lateness_seconds",
                                           "How late a schedule fired after its planned time",
                                           buckets=LATENESS_BUCKETS, registry=registry)
        self.schedules_skipped = Counter("nanoclaw_schedule_slots_skipped", "Schedule slots skipped",
                                         registry=registry)
        self.proxy_requests = Counter("nanoclaw_proxy_requests", "Credential proxy requests",
                                      ["mapping", "status"], registry=registry)
        self.tokens = Counter("nanoclaw_tokens", "Model tokens reported by finished runs",
                              ["group", "model", "type"], registry=registry)
        self.loop_lag = Gauge("nanoclaw_event_loop_lag_seconds", "The event loop's latest measured lag",
                              registry=registry)
        self.loop_lag_histogram = Histogram("nanoclaw_event_loop_lag_distribution_seconds",
                                            "Event loop lag samples", buckets=LAG_BUCKETS, registry=registry)
        registry.register(_Live(supervisor, channels, events))
        # run id -> (container start, previous result or start)
        self._marks: dict[str, tuple[float, float]] = {}
        supervisor.subscribe(self._on_run)
        scheduler.listeners.add(self._on_schedule)
        audit.listeners.add(self._on_audit)

    def _now(self) -> float:
        return self.clock.now()

    def _on_run(self, event: RunEvent) -> None:
        if event.type == "started":
            now = self._now()
            self._marks[event.run_id] = (now, now)
        elif event.type == "result":
            marks = self._marks.get(event.run_id)
            if marks is not None:
                now = self._now()
                self.turn_duration.labels(event.kind).observe(now - marks[1])
                self._marks[event.run_id] = (marks[0], now)
        elif event.type == "finished":
            data = event.data
            self.runs.labels(event.group, event.kind, str(data.get("status", "unknown"))).inc()
            marks = self._marks.pop(event.run_id, None)
            if marks is not None:
                self.container_lifetime.labels(event.kind).observe(self._now() - marks[0])
            usage = data.get("usage")
            if isinstance(usage, dict):
                model = str(data.get("model") or "unknown")[:100]
                for key, kind in TOKEN_TYPES.items():
                    value = usage.get(key)
                    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                        self.tokens.labels(event.group, model, kind).inc(value)

    def _on_schedule(self, type_: str, data: dict) -> None:
        if type_ == "fired":
            self.schedule_lateness.observe(max(0, data["latenessMs"]) / 1000)
        elif type_ == "skipped":
            self.schedules_skipped.inc(data["count"])

    def _on_audit(self, entry: dict) -> None:
        details = entry.get("details")
        if entry["category"] == PROXY_CATEGORY and isinstance(details, dict) and "status" in details:
            self.proxy_requests.labels(str(details.get("mapping", "")), str(details["status"])).inc()

    def text(self) -> bytes:
        return generate_latest(self.registry)

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Measure the loop's lag: how much later than asked a short sleep wakes up (real time)."""
        task_status.started()
        while True:
            before = time.perf_counter()
            await trio.sleep(LAG_INTERVAL)
            lag = max(0.0, time.perf_counter() - before - LAG_INTERVAL)
            self.loop_lag.set(lag)
            self.loop_lag_histogram.observe(lag)


class _Live:
    """What is read from the services at scrape time: queue, containers, channels."""

    def __init__(self, supervisor: Supervisor, channels: Channels, events: EventHub) -> None:
        self.supervisor = supervisor
        self.channels = channels
        self.events = events

    def describe(self):
        return []

    def collect(self):
        stats = self.supervisor.statistics()
        yield GaugeMetricFamily("nanoclaw_queue_depth", "Groups waiting for a container slot", value=stats.queued)
        yield GaugeMetricFamily("nanoclaw_running_containers", "Agent containers running", value=stats.running)
        yield GaugeMetricFamily("nanoclaw_max_concurrent", "The container limit", value=stats.max_concurrent)
        yield GaugeMetricFamily("nanoclaw_event_clients", "Clients of GET /api/v1/events",
                                value=self.events.client_count)
        messages = CounterMetricFamily("nanoclaw_channel_messages", "Chat messages by channel and direction",
                                       labels=["channel", "direction"])
        connected = GaugeMetricFamily("nanoclaw_channel_connected", "1 when the channel is connected",
                                      labels=["channel"])
        for channel in self.channels.statistics().channels:
            messages.add_metric([channel.name, "in"], channel.messages_in)
            messages.add_metric([channel.name, "out"], channel.messages_out)
            connected.add_metric([channel.name], 1 if channel.connected else 0)
        yield messages
        yield connected
