"""One typed configuration object, built from flags and NANOCLAW_* variables."""
from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 55765


@dataclasses.dataclass
class Settings:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    data_dir: Path = Path("./data")
    config_dir: Path = Path("~/.config/nanoclaw")
    allow_insecure: bool = False
    graceful_timeout: float = 5.0
    max_concurrent: int = 5
    # docker | podman | apple_container | none | "" (detect)
    container_runtime: str = ""
    container_network: str = "bridge"
    agent_image: str = "aigo-agent-runner:latest"  # the spec's default tag
    agent_base_image: str = "python:3.12-slim"
    # The agent's provider and model where a namespace's containerConfig.agent names none.
    agent_provider: str = "anthropic"
    agent_model: str = ""
    # A unique id per data dir, so containers of this instance can be found again.
    instance_id: str = ""
    proxy_port: int = 3001
    # Quotas per group (issue 11): schedules it may have, IPC files it may write per minute.
    max_schedules_per_group: int = 50
    ipc_files_per_minute: int = 120
    # How often a live run's trees are measured against its disk quota (containerConfig.maxDiskMb).
    disk_check_secs: float = 30.0
    telegram_api_base: str = "https://api.telegram.org"
    whatsapp_api_base: str = "https://graph.facebook.com/v21.0"
    slack_api_base: str = "https://slack.com/api"
    discord_api_base: str = "https://discord.com/api/v10"
    # Audit entries older than this many days are deleted in the background (0: keep all).
    audit_retention_days: int = 90
    log_level: str = "INFO"
    log_format: str = "text"

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).expanduser().absolute()
        self.config_dir = Path(self.config_dir).expanduser().absolute()

    @property
    def open_without_keys(self) -> bool:
        """May the API answer without a key while none exists? Only on loopback, unless told."""
        return is_loopback(self.host) or self.allow_insecure

    @property
    def database_path(self) -> Path:
        return self.data_dir / "nanoclaw.db"

    @property
    def groups_dir(self) -> Path:
        return self.data_dir / "groups"

    @property
    def ipc_dir(self) -> Path:
        return self.data_dir / "ipc"

    @property
    def media_dir(self) -> Path:
        """Chat media, per group: host-owned, mounted read-only into the group's containers."""
        return self.data_dir / "media"

    @property
    def sessions_dir(self) -> Path:
        return self.data_dir / "sessions"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# (field, environment variable, parser)
ENVIRONMENT: list[tuple[str, str, Callable[[str], Any]]] = [
    ("host", "NANOCLAW_HOST", str),
    ("port", "NANOCLAW_PORT", int),
    ("data_dir", "NANOCLAW_DATA_DIR", Path),
    ("config_dir", "NANOCLAW_CONFIG_DIR", Path),
    ("allow_insecure", "NANOCLAW_ALLOW_INSECURE", lambda v: v.lower() in {"1", "true", "yes"}),
    ("graceful_timeout", "NANOCLAW_GRACEFUL_TIMEOUT", float),
    ("max_concurrent", "NANOCLAW_MAX_CONCURRENT", int),
    ("container_runtime", "NANOCLAW_CONTAINER_RUNTIME", str),
    ("container_network", "NANOCLAW_CONTAINER_NETWORK", str),
    ("agent_image", "NANOCLAW_AGENT_IMAGE", str),
    ("agent_base_image", "NANOCLAW_AGENT_BASE_IMAGE", str),
    ("agent_provider", "NANOCLAW_AGENT_PROVIDER", str),
    ("agent_model", "NANOCLAW_AGENT_MODEL", str),
    ("proxy_port", "NANOCLAW_PROXY_PORT", int),
    ("max_schedules_per_group", "NANOCLAW_MAX_SCHEDULES_PER_GROUP", int),
    ("ipc_files_per_minute", "NANOCLAW_IPC_FILES_PER_MINUTE", int),
    ("disk_check_secs", "NANOCLAW_DISK_CHECK_SECS", float),
    ("telegram_api_base", "NANOCLAW_TELEGRAM_API_BASE", str),
    ("whatsapp_api_base", "NANOCLAW_WHATSAPP_API_BASE", str),
    ("slack_api_base", "NANOCLAW_SLACK_API_BASE", str),
    ("discord_api_base", "NANOCLAW_DISCORD_API_BASE", str),
    ("audit_retention_days", "NANOCLAW_AUDIT_RETENTION_DAYS", int),
    ("log_level", "NANOCLAW_LOG_LEVEL", str.upper),
    ("log_format", "NANOCLAW_LOG_FORMAT", str.lower),
]


class ConfigError(ValueError):
    """A flag or environment variable has a value we cannot use."""


def load_settings(env: Mapping[str, str] | None = None, **overrides) -> Settings:
    """Defaults, then NANOCLAW_* variables, then explicit overrides (flags)."""
    env = os.environ if env is None else env
    values = {}
    for field, var, parse in ENVIRONMENT:
        raw = env.get(var)
        if raw not in (None, ""):
            try:
                values[field] = parse(raw)
            except ValueError:
                raise ConfigError(f"{var}={raw!r} is not a valid value") from None
    values.update({k: v for k, v in overrides.items() if v is not None})
    settings = Settings(**values)
    if not 1 <= settings.max_concurrent <= 64:
        raise ConfigError("NANOCLAW_MAX_CONCURRENT must be between 1 and 64")
    if settings.max_schedules_per_group < 0 or settings.ipc_files_per_minute < 1:
        raise ConfigError("NANOCLAW_MAX_SCHEDULES_PER_GROUP must be >= 0 and NANOCLAW_IPC_FILES_PER_MINUTE >= 1")
    if not 0.1 <= settings.disk_check_secs <= 86400:
        raise ConfigError("NANOCLAW_DISK_CHECK_SECS must be between 0.1 and 86400")
    if settings.audit_retention_days < 0:
        raise ConfigError("NANOCLAW_AUDIT_RETENTION_DAYS must be 0 (keep all) or more")
    if settings.container_network not in {"bridge", "host", "none"}:
        raise ConfigError("NANOCLAW_CONTAINER_NETWORK must be bridge, host or none")
    if settings.agent_provider not in {"anthropic", "openai"}:
        raise ConfigError("NANOCLAW_AGENT_PROVIDER must be anthropic or openai")
    if settings.container_runtime not in {"", "docker", "podman", "apple_container", "none"}:
        raise ConfigError("NANOCLAW_CONTAINER_RUNTIME must be docker, podman, apple_container or none")
    if settings.log_level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        raise ConfigError("NANOCLAW_LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
    if settings.log_format not in {"text", "json"}:
        raise ConfigError("NANOCLAW_LOG_FORMAT must be text or json")
    return settings
