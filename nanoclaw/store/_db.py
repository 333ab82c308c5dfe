from __future__ import annotations

import contextlib
import sqlite3
from importlib import resources
from pathlib import Path
from typing import Any, Awaitable, Callable, Hashable, TypeVar

import trio

from nanoclaw.filemodes import private_database

T = TypeVar("T")
Offload = Callable[..., Awaitable[Any]]
# Database.cached: how long an answer may be kept when no write went through this Database
# (writes by another process, e.g. the CLI, and answers that depend on the time).
CACHE_SECONDS = 1.0
CACHE_ENTRIES = 256


class StoreError(Exception):
    pass


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA foreign_keys = ON")
    # WAL + NORMAL: a committed transaction survives the death of the process
    # (kill -9); only an OS crash can lose the last commits.
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA busy_timeout = 30000")
    return conn


def _migrations() -> list[tuple[int, str, str]]:
    found = []
    for entry in resources.files("nanoclaw.store.migrations").iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:4].isdigit():
            found.append((int(name[:4]), name, entry.read_text()))
    found.sort()
    numbers = [n for n, _, _ in found]
    if len(set(numbers)) != len(numbers):
        raise StoreError(f"two migrations share a number: {numbers}")
    return found


def _apply_migrations(conn: sqlite3.Connection) -> list[str]:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations "
        "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
    )
    done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
    applied = []
    for version, name, sql in _migrations():
        if version in done:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _split(sql):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations VALUES (?, ?, strftime('%s','now'))", (version, name)
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        applied.append(name)
    return applied


def _split(script: str) -> list[str]:
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            if current.strip():
                statements.append(current)
            current = ""
    if current.strip():
        statements.append(current)
    return statements


class _Pending:
    """One write waiting for its batch: what to run, then its result or its error."""
    __slots__ = ("fn", "args", "before", "replaces", "done", "result", "error")

    def __init__(self, fn: Callable[..., Any], args: tuple, before: Callable[[], object] | None,
                 replaces: Hashable | None) -> None:
        self.fn, self.args, self.before, self.replaces = fn, args, before, replaces
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self, conn: sqlite3.Connection) -> None:
        conn.execute("SAVEPOINT one_write")
        try:
            self.result = self.fn(conn, *self.args)
        except BaseException as exc:
            conn.execute("ROLLBACK TO one_write")
            self.error = exc
        finally:
            conn.execute("RELEASE one_write")


def _commit(conn: sqlite3.Connection, batch: list[_Pending]) -> None:
    """The body of one thread hop. First each `before` outside the transaction (of the writes
    that replace the same thing, only the last one's: the others' would be overwritten at once,
    and they share its outcome), then the writes in one transaction, each in a savepoint, so that
    one that fails rolls back alone. When the transaction itself fails, all fail."""
    last = {pending.replaces: pending for pending in batch if pending.replaces is not None}
    for pending in batch:
        if pending.before is not None and last.get(pending.replaces, pending) is pending:
            try:
                pending.before()
            except BaseException as exc:
                pending.error = exc
    for pending in batch:
        pending.error = last.get(pending.replaces, pending).error
    try:
        conn.execute("BEGIN IMMEDIATE")
        for pending in batch:
            if pending.error is None:
                pending.run(conn)
        conn.execute("COMMIT")
    except BaseException as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        for pending in batch:
            pending.error = exc
    for pending in batch:
        pending.done = True


class Database:
    """Serialised writes on one connection, concurrent reads on a small pool.

    Every call runs in a worker thread (`offload`, by default
    `trio.to_thread.run_sync`). Tests of timing code may pass an inline
    offload so that `autojump_clock` does not jump while a thread works.
    """

    def __init__(self, path: Path, *, readers: int = 4, offload: Offload | None = None) -> None:
        self.path = Path(path)
        self._readers = readers
        self._offload = offload or trio.to_thread.run_sync
        self._write_lock = trio.Lock()
        self._pending: list[_Pending] = []
        self._writer: sqlite3.Connection | None = None
        self._pool: list[sqlite3.Connection] = []
        self._read_slots = trio.CapacityLimiter(readers)
        # Bumped when each write() ends; answers cached under an older value are stale.
        self.generation = 0
        self._cache: dict[Any, tuple[int, float, Any]] = {}
        self._building: dict[Any, trio.Lock] = {}

    async def open(self) -> None:
        def _open() -> None:
            private_database(self.path)
            writer = _connect(self.path)
            mode = writer.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise StoreError(f"could not switch {self.path} to WAL mode (got {mode})")
            _apply_migrations(writer)
            self._writer = writer
            self._pool = [_connect(self.path) for _ in range(self._readers)]

        await self._offload(_open)

    async def close(self) -> None:
        with trio.CancelScope(shield=True):
            async with self._write_lock:
                conns = [c for c in [self._writer, *self._pool] if c is not None]
                self._writer, self._pool = None, []
                for conn in conns:
                    conn.close()

    async def write(self, fn: Callable[..., T], *args: Any, before: Callable[[], object] | None = None,
                    replaces: Hashable | None = None) -> T:
        """Run fn(conn, *args) atomically (all of its changes or none); writes never interleave.

        before: blocking work for the same thread hop, run first and outside the transaction (a
        file the change is about); when it raises, fn is not run. replaces: what before replaces
        as a whole (a file's path): of the writes in one batch that name the same, only the last
        one's before runs, and they all get its outcome.

        Group commit: writes that arrive while one is in flight wait for it, then go together
        in one thread hop and one COMMIT, each in its own savepoint, so one that fails rolls
        back alone. Each caller gets its own result or exception."""
        pending = _Pending(fn, args, before, replaces)
        self._pending.append(pending)
        # Shielded so that a cancelled caller neither leaves a transaction half-open on the
        # shared writer connection nor loses track of a write that others will commit.
        with trio.CancelScope(shield=True):
            async with self._write_lock:
                if not pending.done:
                    if self._writer is None:
                        raise StoreError("the store is not open")
                    batch, self._pending = self._pending, []
                    try:
                        await self._offload(_commit, self._writer, batch)
                    finally:
                        self.generation += 1
                        for other in batch:
                            if not other.done:  # the hop itself failed: _commit did not end
                                other.error, other.done = StoreError("the write could not be run"), True
        if pending.error is not None:
            raise pending.error
        return pending.result

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        async with self._read_slots:
            if not self._pool:
                raise StoreError("the store is not open")
            conn = self._pool.pop()
            try:
                return await self._offload(fn, conn, *args)
            finally:
                self._pool.append(conn)

    async def cached(self, key: Any, build: Callable[[], Awaitable[T]]) -> T:
        """build()'s answer for key, kept until the next write through this Database or for
        CACHE_SECONDS, whichever comes first: what polled reads (dashboards) use. One build at a
        time per key (concurrent polls wait for it). An answer whose reads raced a write is given
        but not kept. Callers must not change it."""
        hit = self._cache_hit(key)
        if hit is not None:
            return hit[2]
        if len(self._building) >= CACHE_ENTRIES:
            self._building.clear()
        async with self._building.setdefault(key, trio.Lock()):
            hit = self._cache_hit(key)
            if hit is not None:
                return hit[2]
            generation, started = self.generation, trio.current_time()
            value = await build()
            if generation == self.generation:
                if len(self._cache) >= CACHE_ENTRIES:
                    self._cache.clear()
                self._cache[key] = (generation, started, value)
            return value

    def _cache_hit(self, key: Any) -> tuple[int, float, Any] | None:
        hit = self._cache.get(key)
        if hit is not None and hit[0] == self.generation and trio.current_time() - hit[1] < CACHE_SECONDS:
            return hit
        return None

    # Small conveniences for the common one-statement cases.
    async def execute(self, sql: str, params: Any = ()) -> int:
        """One write statement; returns the number of changed rows."""
        return await self.write(lambda c: c.execute(sql, params).rowcount)

    async def fetchall(self, sql: str, params: Any = ()) -> list[sqlite3.Row]:
        return await self.read(lambda c: c.execute(sql, params).fetchall())

    async def fetchone(self, sql: str, params: Any = ()) -> sqlite3.Row | None:
        return await self.read(lambda c: c.execute(sql, params).fetchone())

    async def get_setting(self, key: str) -> str | None:
        """One value of the settings table (None when it was never set)."""
        row = await self.fetchone("SELECT value FROM settings WHERE key = ?", (key,))
        return row[0] if row else None

    async def set_setting(self, key: str, value: str) -> None:
        await self.execute("INSERT INTO settings (key, value) VALUES (?, ?) "
                           "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, value))


def inserted_id(cursor: sqlite3.Cursor) -> int:
    """The id of the row an INSERT just made."""
    row_id = cursor.lastrowid
    assert row_id is not None, "not an INSERT"
    return row_id


@contextlib.contextmanager
def sync_connection(path: Path):
    """A short-lived connection for the CLI, with migrations applied."""
    private_database(path)
    conn = _connect(path)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        _apply_migrations(conn)
        yield conn
    finally:
        conn.close()
