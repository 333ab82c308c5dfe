"""Pydantic models shared by several services and their endpoints."""
from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

GROUP_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
# \Z, not $: in Python's re, $ also matches before a trailing newline ("abc\n").
GROUP_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}\Z")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MountRequest(Strict):
    hostPath: str = Field(min_length=1, max_length=4096)
    containerPath: str = Field(min_length=1, max_length=255)
    readOnly: bool = True


class ContainerConfig(Strict):
    image: str | None = Field(default=None, max_length=255, description="Agent image; the server default when null")
    timeoutSecs: int = Field(default=1800, ge=10, le=86400, description="Hard timeout, reset by each result")
    idleTimeoutSecs: int = Field(default=300, ge=5, le=86400, description="Close after this long without input")
    memoryMb: int = Field(default=1024, ge=64, le=262144)
    cpus: float = Field(default=1.0, gt=0, le=64)
    env: list[str] = Field(default_factory=list, description='Extra environment, "NAME=value" each')
    additionalMounts: list[MountRequest] = Field(default_factory=list)
    streamReplies: bool = Field(default=False, description="Telegram and Discord: show the answer as one message "
                                "edited as the text streams in")

    @field_validator("env", mode="before")
    @classmethod
    def _env_from_mapping(cls, value):
        if isinstance(value, dict):
            return [f"{k}={v}" for k, v in value.items()]
        return value

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: list[str]) -> list[str]:
        for item in value:
            name, sep, _ = item.partition("=")
            if not sep or not ENV_NAME_RE.match(name):
                raise ValueError(f'env entries must look like "NAME=value", got {item!r}')
        return value

    @field_validator("image")
    @classmethod
    def _image_name(cls, value: str | None) -> str | None:
        if value is not None and (not value or value.startswith("-") or any(c.isspace() for c in value)):
            raise ValueError("not a valid image reference")
        return value
