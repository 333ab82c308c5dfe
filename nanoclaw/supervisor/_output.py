"""Streaming parser for the agent runner's framed results."""
from __future__ import annotations

from nanoclaw import safejson

START = b"---NANOCLAW_OUTPUT_START---"
END = b"---NANOCLAW_OUTPUT_END---"
STREAM_CAP = 10 * 1024 * 1024
# A single framed result larger than this is not a result; it is an error.
FRAME_CAP = 1024 * 1024


class OutputTooLarge(Exception):
    pass


class FrameParser:
    """Feed stdout chunks; get back the decoded frames as they complete.

    A frame is a result (status success/error) or a progress event (status progress).

    Bytes outside frames are kept (last 16 KiB) as the container's log.
    """

    def __init__(self, cap: int = STREAM_CAP) -> None:
        self.cap = cap
        self.total = 0
        self._buffer = bytearray()
        self._in_frame = False
        self.log_tail = bytearray()

    def feed(self, chunk: bytes | bytearray) -> list[dict]:
        self.total += len(chunk)
        if self.total > self.cap:
            raise OutputTooLarge(f"stdout passed {self.cap // (1024 * 1024)} MiB")
        self._buffer += chunk
        results: list[dict] = []
        while True:
            if not self._in_frame:
                at = self._buffer.find(START)
                if at < 0:
                    # Keep a possible partial marker at the end.
                    keep = len(START) - 1
                    self._log(self._buffer[:-keep] if len(self._buffer) > keep else b"")
                    del self._buffer[: max(0, len(self._buffer) - keep)]
                    return results
                self._log(self._buffer[:at])
                del self._buffer[: at + len(START)]
                self._in_frame = True
            at = self._buffer.find(END)
            if at < 0:
                if len(self._buffer) > FRAME_CAP:
                    raise OutputTooLarge("a result frame passed 1 MiB")
                return results
            body = bytes(self._buffer[:at]).strip()
            del self._buffer[: at + len(END)]
            self._in_frame = False
            results.append(_decode(body))

    def _log(self, data: bytes | bytearray) -> None:
        self.log_tail += data
        if len(self.log_tail) > 16384:
            del self.log_tail[: len(self.log_tail) - 16384]


def _decode(body: bytes) -> dict:
    try:
        value = safejson.loads(body, max_bytes=FRAME_CAP)
    except ValueError as exc:
        return {"status": "error", "result": None, "error": f"unreadable result frame: {exc}"}
    if not isinstance(value, dict) or value.get("status") not in ("success", "error", "progress"):
        return {"status": "error", "result": None, "error": "result frame without a valid status"}
    return value
