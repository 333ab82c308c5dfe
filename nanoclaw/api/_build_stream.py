"""POST /container/image/build with Accept: text/event-stream: the build's output as it happens."""
from __future__ import annotations

import functools
import json

from quart import Response, request

MAX_LINE = 8192


def wants_stream() -> bool:
    return "text/event-stream" in request.headers.get("Accept", "")


def streams_with(alternative):
    """Answer with `await alternative(**kwargs)` when the client accepts text/event-stream, else
    with the view (whose response model stays the documented, validated JSON answer)."""

    def decorator(view):
        @functools.wraps(view)
        async def wrapper(*args, **kwargs):
            if wants_stream():
                return await alternative(*args, **kwargs)
            return await view(*args, **kwargs)

        return wrapper

    return decorator


def _message(event: str, data: dict) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def stream_build(build, result) -> Response:
    """One `output` event per line of build output, then one `result` event: result(build) is the
    JSON answer's shape. The build goes on if the client leaves."""

    async def events():
        offset, pending = 0, b""
        while True:
            changed = build.changed
            data, offset = build.since(offset)
            pending += data
            *lines, pending = pending.split(b"\n")
            if len(pending) > MAX_LINE:  # a very long line without a newline: send it in pieces
                lines.append(pending)
                pending = b""
            for line in lines:
                yield _message("output", {"line": line.decode(errors="replace").rstrip("\r")})
            if build.done.is_set() and offset == build.total:
                if pending:
                    yield _message("output", {"line": pending.decode(errors="replace")})
                yield _message("result", result(build))
                return
            await changed.wait()

    response = Response(events(), content_type="text/event-stream; charset=utf-8")
    response.headers["Cache-Control"] = "no-store"
    response.timeout = None
    return response
