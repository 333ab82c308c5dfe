"""Helpers every blueprint uses."""
from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict
from quart import current_app

from nanoclaw.clock import iso  # noqa: F401  (re-exported for blueprints)

if TYPE_CHECKING:
    from nanoclaw.services import Services


class ApiModel(BaseModel):
    """Request bodies: unknown fields are an error, so typos do not pass silently."""

    model_config = ConfigDict(extra="forbid")


class Answer(BaseModel):
    """Response bodies."""


def services() -> Services:
    return current_app.config["NANOCLAW_SERVICES"]


def clamp(value: int | None, *, default: int, maximum: int, minimum: int = 1) -> int:
    if value is None:
        return default
    return max(minimum, min(maximum, value))
