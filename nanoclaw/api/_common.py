"""Helpers every blueprint uses."""
from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, PrivateAttr
from quart import current_app

from nanoclaw.clock import iso  # noqa: F401  (re-exported for blueprints)

if TYPE_CHECKING:
    from nanoclaw.services import Services


class ApiModel(BaseModel):
    """Request bodies: unknown fields are an error, so typos do not pass silently."""

    model_config = ConfigDict(extra="forbid")


class Answer(BaseModel):
    """Response bodies."""


class Kept(Answer):
    """A response body kept between requests (Database.cached): dumped once, that dump reused,
    so a poll costs the JSON encoding and no model work. Never change a Kept answer."""

    _dumped: dict | None = PrivateAttr(default=None)

    def model_dump(self, **kwargs) -> dict:
        if kwargs:
            return super().model_dump(**kwargs)
        if self._dumped is None:
            self._dumped = super().model_dump()
        return self._dumped


def services() -> Services:
    return current_app.config["NANOCLAW_SERVICES"]


def clamp(value: int | None, *, default: int, maximum: int, minimum: int = 1) -> int:
    if value is None:
        return default
    return max(minimum, min(maximum, value))
