"""Credential proxy: containers reach upstream APIs without ever holding the real credential."""
from nanoclaw.proxy._mappings import (ALLOWED_PATH_PATTERN, CREDENTIAL_PATTERN, CREDENTIAL_TYPE_PATTERN, NAME_PATTERN,
                                      PLACEHOLDER, RUN_TOKEN_HEADER, Mapping, env_prefix)
from nanoclaw.proxy._meter import metered_month, month_start
from nanoclaw.proxy._proxy import CredentialProxy, ProxyStatistics

__all__ = ["ALLOWED_PATH_PATTERN", "CREDENTIAL_PATTERN", "CREDENTIAL_TYPE_PATTERN", "NAME_PATTERN", "PLACEHOLDER",
           "RUN_TOKEN_HEADER", "CredentialProxy", "Mapping", "ProxyStatistics", "env_prefix", "metered_month",
           "month_start"]
