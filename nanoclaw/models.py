"""Pydantic models shared by several services and their endpoints."""
from __future__ import annotations

import re
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

GROUP_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
# \Z, not $: in Python's re, $ also matches before a trailing newline ("abc\n").
GROUP_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}\Z")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
# A credential proxy mapping's name (also what containerConfig.agent.mapping names).
MAPPING_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9 ._-]{0,63}$"
MCP_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}\Z")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MountRequest(Strict):
    hostPath: str = Field(min_length=1, max_length=4096)
    containerPath: str = Field(min_length=1, max_length=255)
    readOnly: bool = True


class McpCommand(Strict):
    """An MCP server the agent starts inside its container (stdio)."""

    command: str = Field(min_length=1, max_length=1000)
    args: list[str] = Field(default_factory=list, max_length=100)
    env: dict[str, str] = Field(default_factory=dict, max_length=100)

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [name for name in value if not ENV_NAME_RE.match(name)]
        if bad:
            raise ValueError(f"env names must be letters, digits and '_': {bad}")
        return value


class McpUrl(Strict):
    """An MCP server the agent reaches over HTTP."""

    url: str = Field(min_length=1, max_length=2048)

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError("an MCP server url must be an http:// or https:// URL")
        return value


class AgentConfig(Strict):
    """The agent's model and limits; provider, model and mapping fall back to the server's defaults."""

    provider: Literal["anthropic", "openai"] | None = Field(
        default=None, description="anthropic | openai; NANOCLAW_AGENT_PROVIDER when null")
    model: str | None = Field(default=None, min_length=1, max_length=200,
                              description="NANOCLAW_AGENT_MODEL when null (for the server's provider)")
    mapping: str | None = Field(default=None, pattern=MAPPING_NAME_PATTERN,
                                description="Credential proxy mapping the agent calls through; the provider when null")
    maxSteps: int = Field(default=50, ge=1, le=1000, description="Tool steps per turn")
    maxTokens: int = Field(default=8192, ge=1, le=1_000_000, description="Output tokens per model call")
    maxContextTokens: int = Field(default=100_000, ge=1000, le=10_000_000,
                                  description="History kept before older turns are summarised")
    vision: bool = True
    monthlyTokenBudget: int | None = Field(
        default=None, ge=1, description="Runs are refused once the group used this many tokens this month (UTC)")
    mcpServers: dict[str, McpCommand | McpUrl] = Field(default_factory=dict, max_length=50)

    @field_validator("mcpServers")
    @classmethod
    def _mcp_names(cls, value: dict) -> dict:
        bad = [name for name in value if not MCP_NAME_RE.match(name)]
        if bad:
            raise ValueError(f"MCP server names are 1-64 letters, digits, '_' or '-': {bad}")
        return value


class ContainerConfig(Strict):
    image: str | None = Field(default=None, max_length=255, description="Agent image; the server default when null")
    timeoutSecs: int = Field(default=1800, ge=10, le=86400, description="A container's lifetime; nothing extends it")
    idleTimeoutSecs: int = Field(default=300, ge=5, le=86400, description="Close after this long without input")
    memoryMb: int = Field(default=1024, ge=64, le=262144)
    cpus: float = Field(default=1.0, gt=0, le=64)
    maxDiskMb: int = Field(default=2048, ge=1, le=1048576,
                           description="Quota of the group's folders; over it, runs are refused or stopped")
    env: list[str] = Field(default_factory=list, description='Extra environment, "NAME=value" each')
    additionalMounts: list[MountRequest] = Field(default_factory=list)
    network: Literal["bridge", "proxy-only"] = Field(
        default="bridge",
        description='"bridge": the server\'s container network (outbound access); "proxy-only": an internal '
                    "network where only the credential proxy is reachable")
    agent: AgentConfig | None = Field(default=None, description="The agent's provider, model and limits")
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
