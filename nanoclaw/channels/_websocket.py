"""The WebSocket the push platforms (Slack Socket Mode, the Discord Gateway) keep open."""
from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

import trio
from trio_websocket import ConnectionRejected, ConnectionTimeout, HandshakeError, WebSocketConnection, \
    open_websocket_url

from nanoclaw.channels._base import PlatformError

CONNECT_TIMEOUT = 10.0
# How long a goodbye may wait for the peer's answering close frame. A cancelled task
# no longer reads, so this bounds every stop: a channel stops in well under a second.
CLOSE_GRACE = 0.5


async def close_socket(ws: WebSocketConnection, code: int = 1000) -> None:
    """Send a close frame with `code`; wait at most CLOSE_GRACE for the peer's, then drop the TCP stream."""
    with trio.move_on_after(CLOSE_GRACE):
        await ws.aclose(code)


@asynccontextmanager
async def open_socket(url: str, what: str) -> AsyncIterator[WebSocketConnection]:
    """A connected WebSocket that says goodbye with a 1000 close frame even when its task is
    cancelled. Failing to connect is a PlatformError; the URL (it may hold a ticket) is never
    part of the message."""
    try:
        async with open_websocket_url(url, connect_timeout=CONNECT_TIMEOUT, disconnect_timeout=CLOSE_GRACE) as ws:
            try:
                yield ws
            finally:
                with trio.CancelScope(shield=True):
                    await close_socket(ws)
    except ConnectionRejected as exc:
        raise PlatformError(f"{what} refused the connection: HTTP {exc.status_code}", status=exc.status_code) from None
    except ConnectionTimeout:
        raise PlatformError(f"cannot open {what}: no answer within {CONNECT_TIMEOUT:g} s") from None
    except HandshakeError as exc:
        cause = exc.__cause__
        raise PlatformError(f"cannot open {what}: {type(cause or exc).__name__}: {cause or exc}") from None


def close_code(exc: Exception) -> int | None:
    """The close code of a trio_websocket.ConnectionClosed (None when the peer vanished without one)."""
    reason = getattr(exc, "reason", None)
    return getattr(reason, "code", None)
