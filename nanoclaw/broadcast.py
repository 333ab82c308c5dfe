"""Wake every task waiting for a change: the one helper for "set the Event, make a new one"."""
from __future__ import annotations

import trio


class Broadcast:
    """`await changed.wait()` returns at the next `changed.fire()`; a fire wakes everyone
    waiting at that moment and nobody who starts waiting after it."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def fire(self) -> None:
        self._event.set()
        self._event = trio.Event()

    async def wait(self) -> None:
        await self._event.wait()
