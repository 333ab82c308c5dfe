"""Host and port as URLs, binds and messages write them (an IPv6 address in brackets)."""
from __future__ import annotations


def bracketed(host: str) -> str:
    """host as it stands before ':port': an IPv6 address gets brackets (once)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def host_port(host: str, port: int | str) -> str:
    return f"{bracketed(host)}:{port}"
