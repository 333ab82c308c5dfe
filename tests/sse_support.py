"""Reading a Server-Sent Events stream in tests (the wire format, parsed by hand)."""
from __future__ import annotations

import json

import httpx
import trio


class SseReader:
    """Parses messages off an httpx streaming response: (id, event, data) dicts; comments skipped."""

    def __init__(self, response: httpx.Response) -> None:
        self.lines = response.aiter_lines()

    async def next(self) -> dict:
        message: dict = {}
        async for line in self.lines:
            if line == "":
                if "event" in message or "data" in message:
                    return message
                message = {}
                continue
            if line.startswith(":"):
                continue
            field, _, value = line.partition(": ")
            if field == "data":
                message["data"] = json.loads(value)
            elif field in {"id", "event", "retry"}:
                message[field] = value
        raise EOFError("the stream ended")

    async def until(self, predicate, timeout: float = 120) -> list[dict]:
        """Messages up to and including the first that satisfies predicate."""
        seen = []
        with trio.fail_after(timeout):
            while True:
                message = await self.next()
                seen.append(message)
                if predicate(message):
                    return seen
