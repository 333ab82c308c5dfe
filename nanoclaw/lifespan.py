"""The ASGI lifespan handshake of an app with nothing to start or stop.

The credential proxy's forwarder answers it so; so do the loopback upstreams and
fakes of the tests and benchmarks.
"""
from __future__ import annotations

from typing import Any, Awaitable, Callable


async def answer_lifespan(receive: Callable[[], Awaitable[dict[str, Any]]],
                          send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
    """Complete startup and shutdown at once; returns after shutdown."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
