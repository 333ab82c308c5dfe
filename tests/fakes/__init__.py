"""Fake servers for the platform APIs we cannot reach from tests; each speaks the real wire protocol."""
from __future__ import annotations

from typing import Callable

import trio
from hypercorn.config import Config
from hypercorn.trio import serve


async def serve_on_loopback(nursery: trio.Nursery, app, *, port: int = 0) -> str:
    """Serve an ASGI app with Hypercorn on 127.0.0.1 in `nursery`; returns its base URL."""
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = config.errorlog = None
    config.graceful_timeout = 0.5
    binds = await nursery.start(lambda task_status: serve(app, config, mode="asgi", task_status=task_status))
    return binds[0]


class Observable:
    """For fakes: `_touch()` after every change they see, so tests can `await wait_for(...)`.

    The subclass (a dataclass) holds `_changed: trio.Event`.
    """

    _changed: trio.Event

    def _touch(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10) -> None:
        """Wait (bounded) until predicate() holds; it is checked after every change the fake sees."""
        with trio.fail_after(timeout):
            while not predicate():
                await self._changed.wait()
