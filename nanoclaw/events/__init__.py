"""Live events: what happens in the server, as one ordered stream (GET /api/v1/events)."""
from nanoclaw.events._hub import Event, EventHub, Subscription
from nanoclaw.events._listeners import Listeners
from nanoclaw.events._sources import wire as wire_events

__all__ = ["Event", "EventHub", "Subscription", "Listeners", "wire_events"]
