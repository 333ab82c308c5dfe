"""Credential mappings: which upstream a proxy path leads to, and the secret it carries."""
from __future__ import annotations

import dataclasses
import json
import logging
import re
import sqlite3
import uuid
from urllib.parse import quote, urlsplit

from nanoclaw.clock import Clock, iso
from nanoclaw.errors import Conflict, Invalid
from nanoclaw.models import MAPPING_NAME_PATTERN
from nanoclaw.secrets import SecretBox, mask
from nanoclaw.store import Database

PLACEHOLDER = "CREDENTIAL_PROXY_PLACEHOLDER"
NAME_PATTERN = MAPPING_NAME_PATTERN
# RFC 9110 token characters for the header name of `header:<Name>`.
CREDENTIAL_TYPE_PATTERN = r"^(api_key|bearer|header:[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100})$"
# Printable ASCII: a credential goes into a header value as it is.
CREDENTIAL_PATTERN = r"^[\x20-\x7e]*$"  # empty: a local server that needs no key
# An allowedPaths entry: a raw (not percent-decoded) path prefix below the mapping, no query.
ALLOWED_PATH_PATTERN = r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/-]{0,511}$"
ANTHROPIC_HOST = "api.anthropic.com"
RUN_TOKEN_HEADER = "x-nanoclaw-run-token"
# Headers the proxy owns itself; a `header:<Name>` mapping may not inject them.
RESERVED_HEADERS = {
    "host", "content-length", "transfer-encoding", "connection", "keep-alive", "te", "trailer",
    "upgrade", "proxy-authorization", "proxy-authenticate", "expect", RUN_TOKEN_HEADER,
}

log = logging.getLogger("nanoclaw.proxy")


def env_prefix(name: str) -> str:
    """NAME in <NAME>_BASE_URL: upper-cased, every other character than A-Z and 0-9 becomes '_'."""
    return re.sub(r"[^A-Z0-9]", "_", name.upper())


@dataclasses.dataclass(frozen=True)
class Mapping:
    id: str
    name: str
    upstream_url: str
    credential_type: str
    credential: str = dataclasses.field(repr=False)
    created_at: float
    # None: every group / every path.
    groups: tuple[str, ...] | None = None
    allowed_paths: tuple[str, ...] | None = None

    def allows_group(self, group: str) -> bool:
        return self.groups is None or group in self.groups

    def allows_path(self, path: str) -> bool:
        """`path` (raw, below the mapping) equals a prefix or lies under it, segment-wise:
        /v1/messages allows /v1/messages and /v1/messages/x, not /v1/messagesX."""
        if self.allowed_paths is None:
            return True
        return any(path == prefix or path.startswith(prefix.rstrip("/") + "/") for prefix in self.allowed_paths)

    @property
    def env_prefix(self) -> str:
        return env_prefix(self.name)

    @property
    def path_segment(self) -> str:
        return quote(self.name, safe="")

    @property
    def is_anthropic(self) -> bool:
        return self.name.lower() == "anthropic" or urlsplit(self.upstream_url).hostname == ANTHROPIC_HOST

    @property
    def auth_header(self) -> tuple[bytes, bytes]:
        """The header that carries the real credential upstream."""
        if self.credential_type == "api_key":
            return b"x-api-key", self.credential.encode()
        if self.credential_type == "bearer":
            return b"authorization", b"Bearer " + self.credential.encode()
        return self.credential_type.partition(":")[2].lower().encode(), self.credential.encode()

    def public(self) -> dict:
        """What the API shows: everything but the secret, of which only a mask."""
        return {
            "id": self.id,
            "name": self.name,
            "upstreamUrl": self.upstream_url,
            "credentialType": self.credential_type,
            "credentialMasked": mask(self.credential),
            "placeholder": PLACEHOLDER,
            "createdAt": iso(self.created_at),
            "groups": list(self.groups) if self.groups is not None else None,
            "allowedPaths": list(self.allowed_paths) if self.allowed_paths is not None else None,
        }


def check_upstream(url: str) -> str:
    """An absolute http(s) URL without credentials, query or fragment; no trailing '/'.

    Printable ASCII only: urlsplit() silently drops CR/LF/tab, so they are refused first.
    """
    if not re.fullmatch(r"[\x21-\x7e]+", url):
        raise Invalid("upstreamUrl must be printable ASCII without spaces or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  a port that is not a number or out of range raises here
    except ValueError:
        raise Invalid("upstreamUrl is not a valid URL") from None
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise Invalid("upstreamUrl must be an absolute http:// or https:// URL")
    if not re.fullmatch(r"[a-z0-9._-]+|[0-9a-f:.]+", parts.hostname):
        raise Invalid("upstreamUrl has an invalid host name")
    if parts.username is not None or parts.password is not None:
        # Never echo the URL here: the user part may be a secret.
        raise Invalid("upstreamUrl must not contain credentials; put them in 'credential'")
    if parts.query or parts.fragment:
        raise Invalid("upstreamUrl must not have a query or fragment")
    return url.rstrip("/")


def check_credential_type(credential_type: str) -> None:
    kind, _, header = credential_type.partition(":")
    if kind == "header" and header.lower() in RESERVED_HEADERS:
        raise Invalid(f"credentialType may not set the {header} header; the proxy manages it")


def check_allowed_paths(paths: list[str] | None) -> tuple[str, ...] | None:
    if paths is None:
        return None
    for path in paths:
        if {".", ".."} & set(path.split("/")):
            raise Invalid("allowedPaths entries may not contain '.' or '..' segments")
    return tuple(paths)


def _json_tuple(value: str | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(json.loads(value))


def _row_to_mapping(row: sqlite3.Row, box: SecretBox) -> Mapping:
    return Mapping(
        id=row["id"],
        name=row["name"],
        upstream_url=row["upstream_url"],
        credential_type=row["credential_type"],
        credential=box.decrypt(row["credential_sealed"], context=row["id"]),
        created_at=row["created_at"],
        groups=_json_tuple(row["groups"]),
        allowed_paths=_json_tuple(row["allowed_paths"]),
    )


def _json_or_null(value: tuple[str, ...] | None) -> str | None:
    return None if value is None else json.dumps(list(value))


class MappingStore:
    """Mappings in SQLite; credentials sealed at rest with the SecretBox."""

    def __init__(self, db: Database, secrets: SecretBox, clock: Clock) -> None:
        self.db = db
        self.secrets = secrets
        self.clock = clock

    async def load(self) -> list[Mapping]:
        rows = await self.db.fetchall("SELECT * FROM credential_mappings ORDER BY created_at, name")
        mappings = []
        for row in rows:
            try:
                mappings.append(_row_to_mapping(row, self.secrets))
            except ValueError as exc:  # sealed with another secret.key: skip it, keep serving
                log.error("credential mapping %r is not served: %s", row["name"], exc)
        return mappings

    async def add(self, name: str, upstream_url: str, credential_type: str, credential: str, *,
                  groups: list[str] | None = None, allowed_paths: list[str] | None = None) -> Mapping:
        upstream_url = check_upstream(upstream_url)
        check_credential_type(credential_type)
        allowed = check_allowed_paths(allowed_paths)
        mapping = Mapping(
            id=uuid.uuid4().hex,
            name=name,
            upstream_url=upstream_url,
            credential_type=credential_type,
            credential=credential,
            created_at=self.clock.now(),
            groups=tuple(dict.fromkeys(groups)) if groups is not None else None,
            allowed_paths=allowed,
        )
        sealed = self.secrets.encrypt(credential, context=mapping.id)

        def _insert(conn: sqlite3.Connection) -> None:
            clash = conn.execute(
                "SELECT name FROM credential_mappings WHERE name = ? OR env_prefix = ?",
                (name, mapping.env_prefix),
            ).fetchone()
            if clash is not None:
                if clash["name"] == name:
                    raise Conflict(f"A credential mapping named {name!r} already exists")
                raise Conflict(
                    f"{name!r} would give the same container variables ({mapping.env_prefix}_BASE_URL) "
                    f"as the existing mapping {clash['name']!r}; choose another name"
                )
            conn.execute(
                "INSERT INTO credential_mappings (id, name, env_prefix, upstream_url, credential_type, "
                "credential_sealed, created_at, groups, allowed_paths) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (mapping.id, name, mapping.env_prefix, upstream_url, credential_type, sealed,
                 mapping.created_at, _json_or_null(mapping.groups), _json_or_null(mapping.allowed_paths)),
            )

        await self.db.write(_insert)
        return mapping

    async def delete(self, mapping_id: str) -> bool:
        return await self.db.execute("DELETE FROM credential_mappings WHERE id = ?", (mapping_id,)) == 1
