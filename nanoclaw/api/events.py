"""GET /events: the live event stream (Server-Sent Events)."""
from __future__ import annotations

import json

import trio
from quart import Blueprint, Response, request

from nanoclaw.api._common import services
from nanoclaw.api.errors import ApiError

bp = Blueprint("events", __name__)
# A comment line this often keeps proxies and browsers from closing an idle stream.
HEARTBEAT_SECONDS = 15.0
RETRY_MS = 3000


def _last_event_id() -> int | None:
    raw = request.headers.get("Last-Event-ID")
    if raw is None or raw.strip() == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "Last-Event-ID must be an event id (a whole number)", code="VALIDATION_ERROR") from None
    if value < 0:
        raise ApiError(400, "Last-Event-ID must not be negative", code="VALIDATION_ERROR")
    return value


@bp.get("/events")
async def events():
    """Live events as Server-Sent Events: runs, queue, schedules, channels, audit warnings.

    Each message has an `id`; reconnect with `Last-Event-ID` to get exactly what was missed
    (a `gap` event says when that is no longer buffered). A client that falls behind is dropped.
    """
    hub = services().events
    subscription = hub.subscribe(_last_event_id())

    async def stream():
        with subscription:
            yield f"retry: {RETRY_MS}\n: connected, last id {hub.last_id}\n\n".encode()
            if subscription.gap is not None:
                resume = subscription.replay[0].id - 1 if subscription.replay else hub.last_id
                yield f"id: {resume}\nevent: gap\ndata: {json.dumps(subscription.gap)}\n\n".encode()
            for event in subscription.replay:
                yield event.sse
            subscription.replay = []
            while True:
                event = None
                try:
                    with trio.move_on_after(HEARTBEAT_SECONDS):
                        event = await subscription.receive.receive()
                except (trio.EndOfChannel, trio.ClosedResourceError):
                    if subscription.dropped:
                        yield b"event: dropped\ndata: {\"reason\": \"this client fell behind\"}\n\n"
                    return
                yield event.sse if event is not None else b": heartbeat\n\n"

    response = Response(stream(), content_type="text/event-stream; charset=utf-8")
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Accel-Buffering"] = "no"
    response.timeout = None
    return response
