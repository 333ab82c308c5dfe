"""Log output: text or JSON lines, secrets redacted in both, group and run id where known.

`log_context(group=..., runId=...)` binds fields for the current task and the tasks it starts
(Trio copies context variables into child tasks), so every line a run's code logs carries them.
"""
from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import sys
from typing import Any

from nanoclaw.secrets import RedactingFilter, SecretBox

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
FORMATS = ("text", "json")
_context: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("nanoclaw_log_context", default={})  # noqa: B039 (never mutated: set() replaces it)


def log_context(**fields: Any) -> None:
    """Add fields (group, runId) to every log line of this task and the tasks it starts."""
    _context.set({**_context.get(), **{k: v for k, v in fields.items() if v is not None}})


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = dict(_context.get())
    for name in ("group", "runId"):
        value = getattr(record, name, None)
        if value is not None:
            fields[name] = value
    return fields


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message [group=.. runId=..]`, the whole line redacted."""

    def __init__(self, box: SecretBox) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.box = box

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = _fields(record)
        if fields:
            first, newline, rest = line.partition("\n")
            line = first + " [" + " ".join(f"{k}={v}" for k, v in fields.items()) + "]" + newline + rest
        return self.box.redact(line)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, group/runId when known, exception."""

    def __init__(self, box: SecretBox) -> None:
        super().__init__()
        self.box = box

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": self.box.redact(record.getMessage()),
        }
        for key, value in _fields(record).items():
            entry[key] = self.box.redact(str(value))
        if record.exc_info:
            entry["exception"] = self.box.redact(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


def setup(box: SecretBox, level: str = "INFO", fmt: str = "text", stream=None) -> logging.Handler:
    """Send every log record to stream (stderr) in the chosen format; returns the handler."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(box) if fmt == "json" else TextFormatter(box))
    handler.addFilter(RedactingFilter(box))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx logs every request URL at INFO; some carry a token in the path (Telegram).
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return handler
