"""Synchronous observers of one event source (audit, scheduler, channels, supervisor queue)."""
from __future__ import annotations

import logging
from typing import Any, Callable

log = logging.getLogger("nanoclaw.events")


class Listeners:
    """`listeners.add(fn)`; `listeners(*args)` calls each fn. A listener must not block;
    one that raises is logged and never disturbs the source or the other listeners."""

    def __init__(self) -> None:
        self._fns: list[Callable[..., Any]] = []

    def add(self, fn: Callable[..., Any]) -> None:
        self._fns.append(fn)

    def __call__(self, *args: Any) -> None:
        for fn in self._fns:
            try:
                fn(*args)
            except Exception:
                log.exception("event listener failed")
