"""Fake servers for the platform APIs we cannot reach from tests; each speaks the real wire protocol."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, ClassVar

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from trio_websocket import WebSocketRequest, serve_websocket


async def serve_on_loopback(nursery: trio.Nursery, app, *, port: int = 0, graceful_timeout: float = 0.5) -> str:
    """Serve an ASGI app with Hypercorn on 127.0.0.1 in `nursery`; returns its base URL."""
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = config.errorlog = None
    config.graceful_timeout = graceful_timeout
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


@dataclass
class PlatformFake(Observable):
    """What the chat platform fakes share: where `serve_fake` put them, and the change signal."""

    # Where the platform's API is below `url` (the server's API base setting is `api_url`).
    api_path: ClassVar[str] = ""
    url: str = ""  # http://127.0.0.1:<port>
    ws_url: str = ""  # ws://127.0.0.1:<port>, the WebSocket side of a push platform (Slack, Discord)
    _changed: trio.Event = field(default_factory=trio.Event)

    @property
    def api_url(self) -> str:
        return self.url + self.api_path


async def serve_fake(fake: PlatformFake, app: Any, *,
                     websocket: Callable[[WebSocketRequest], Any] | None = None,
                     task_status: trio.TaskStatus[PlatformFake] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve a fake's ASGI app on 127.0.0.1 (and `websocket`, the handler of a push platform's
    socket, on a port of its own) until cancelled; nursery.start gives the fake, `url` (and
    `ws_url`) set."""
    async with trio.open_nursery() as nursery:
        if websocket is not None:
            server = await nursery.start(partial(serve_websocket, websocket, "127.0.0.1", 0, None))
            fake.ws_url = f"ws://127.0.0.1:{server.port}"
        fake.url = await serve_on_loopback(nursery, app)
        task_status.started(fake)
