"""Credential proxy: containers reach upstream APIs without ever holding the real credential."""
from nanoclaw.proxy._mappings import PLACEHOLDER, RUN_TOKEN_HEADER, Mapping, env_prefix
from nanoclaw.proxy._proxy import CredentialProxy, ProxyStatistics

__all__ = ["PLACEHOLDER", "RUN_TOKEN_HEADER", "CredentialProxy", "Mapping", "ProxyStatistics", "env_prefix"]
