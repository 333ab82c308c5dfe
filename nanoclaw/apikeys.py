"""API keys: shown once at creation, stored only as SHA-256 hashes."""
from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
import uuid

import trio

from nanoclaw.clock import Clock
from nanoclaw.store import Database

KEY_PREFIX = "nck_"
# Keys made or revoked by the CLI in another process are seen within this many seconds.
CACHE_SECONDS = 1.0


def hash_key(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def create_key(conn: sqlite3.Connection, name: str, now: float) -> tuple[str, str]:
    raw = KEY_PREFIX + secrets.token_urlsafe(32)
    key_id = uuid.uuid4().hex[:12]
    conn.execute(
        "INSERT INTO api_keys (id, name, key_hash, prefix, created_at) VALUES (?, ?, ?, ?, ?)",
        (key_id, name, hash_key(raw), raw[: len(KEY_PREFIX) + 4], now),
    )
    return key_id, raw


def list_keys(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    return conn.execute(
        "SELECT id, name, prefix, created_at, revoked_at FROM api_keys ORDER BY created_at"
    ).fetchall()


def revoke_key(conn: sqlite3.Connection, key_id: str, now: float) -> bool:
    cur = conn.execute(
        "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (now, key_id)
    )
    return cur.rowcount == 1


def active_hashes(conn: sqlite3.Connection) -> list[str]:
    return [r[0] for r in conn.execute("SELECT key_hash FROM api_keys WHERE revoked_at IS NULL")]


class ApiKeys:
    def __init__(self, db: Database, clock: Clock, *, open_without_keys: bool = True) -> None:
        self.db = db
        self.clock = clock
        # False on a non-loopback bind: with no key at all, every request is refused.
        self.open_without_keys = open_without_keys
        self._hashes: list[str] = []
        self._loaded_at: float | None = None
        self._lock = trio.Lock()

    async def _active(self) -> list[str]:
        now = trio.current_time()
        if self._loaded_at is None or now - self._loaded_at >= CACHE_SECONDS:
            async with self._lock:
                if self._loaded_at is None or trio.current_time() - self._loaded_at >= CACHE_SECONDS:
                    self._hashes = await self.db.read(active_hashes)
                    self._loaded_at = trio.current_time()
        return self._hashes

    async def enabled(self) -> bool:
        """Does at least one active key exist?"""
        return bool(await self._active())

    async def required(self) -> bool:
        return not self.open_without_keys or await self.enabled()

    async def check(self, raw: str | None) -> bool:
        """True when raw is an active key. Compares every stored hash in constant time."""
        hashes = await self._active()
        if not raw:
            return False
        candidate = hash_key(raw)
        found = False
        for stored in hashes:
            found |= hmac.compare_digest(stored, candidate)
        return found

    def invalidate(self) -> None:
        self._loaded_at = None

    async def create(self, name: str) -> tuple[str, str]:
        result = await self.db.write(create_key, name, self.clock.now())
        self.invalidate()
        return result
