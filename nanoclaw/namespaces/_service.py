from __future__ import annotations

import errno
import logging
import os
import sqlite3
import uuid
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

import trio
from pydantic import BaseModel, Field

from nanoclaw import safefs
from nanoclaw.audit import Audit
from nanoclaw.clock import Clock, iso
from nanoclaw.config import Settings
from nanoclaw.errors import Conflict, Invalid, NotFound
from nanoclaw.models import GROUP_NAME_RE, ContainerConfig
from nanoclaw.store import Database

T = TypeVar("T")

log = logging.getLogger("nanoclaw.namespaces")

GLOBAL = "global"
INSTRUCTIONS_FILE = "CLAUDE.md"
# The API takes at most 512 Ki characters; a file on disk is read up to this many bytes.
MAX_INSTRUCTIONS_BYTES = 4 * 512 * 1024
DEFAULT_TRIGGER = "@Andy"


class Namespace(BaseModel):
    id: str
    name: str
    description: str = ""
    chatJids: list[str] = Field(default_factory=list)
    trigger: str = DEFAULT_TRIGGER
    requiresTrigger: bool = True
    isMain: bool = False
    containerConfig: ContainerConfig = Field(default_factory=ContainerConfig)
    createdAt: str
    updatedAt: str


def check_name(name: str) -> None:
    if not GROUP_NAME_RE.match(name):
        raise Invalid(
            "Namespace names are 1-64 characters of letters, digits, '_' and '-', "
            "starting with a letter or digit"
        )
    # Any case: on a case-insensitive file system groups/Global/ is groups/global/.
    if name.lower() == GLOBAL:
        raise Invalid("'global' is reserved for the global instructions")


def check_jid(jid: str) -> None:
    prefix, sep, rest = jid.partition(":")
    if not sep or not prefix or not rest or len(jid) > 200 or any(c.isspace() for c in jid):
        raise Invalid(f"{jid!r} is not a chat JID (expected '<channel>:<id>', e.g. 'tg:12345')")


class Namespaces:
    def __init__(self, settings: Settings, db: Database, clock: Clock, audit: Audit, *, offload=None) -> None:
        self.settings = settings
        self.db = db
        self.clock = clock
        self.audit = audit
        # File work runs in a thread; timing tests may run it inline (see Database).
        self.offload = offload or trio.to_thread.run_sync
        # Called with (old, new) after every write, so caches (routing) stay fresh.
        self.listeners: list[Any] = []
        # list() is what dashboards poll: kept in memory until the next change (any listener call).
        self._list_cache: list[Namespace] | None = None
        self._by_name: dict[str, Namespace] | None = None
        self._generation = 0
        self.listeners.append(self._invalidate)

    async def _invalidate(self) -> None:
        self._generation += 1
        self._list_cache = self._by_name = None

    # -- records ----------------------------------------------------------

    def _load(self, conn: sqlite3.Connection, row: sqlite3.Row, jids: list[str] | None = None) -> Namespace:
        if jids is None:
            jids = [r[0] for r in conn.execute(
                "SELECT jid FROM namespace_chats WHERE namespace_id = ? ORDER BY position", (row["id"],)
            )]
        return Namespace(
            id=row["id"],
            name=row["name"],
            description=row["description"],
            chatJids=jids,
            trigger=row["trigger"],
            requiresTrigger=bool(row["requires_trigger"]),
            isMain=bool(row["is_main"]),
            containerConfig=ContainerConfig.model_validate_json(row["container_config"]),
            createdAt=iso(row["created_at"]),
            updatedAt=iso(row["updated_at"]),
        )

    async def list(self) -> list[Namespace]:
        def _q(conn):
            # Two queries, not one per namespace.
            jids: dict[str, list[str]] = {}
            for ns_id, jid in conn.execute("SELECT namespace_id, jid FROM namespace_chats ORDER BY position"):
                jids.setdefault(ns_id, []).append(jid)
            rows = conn.execute("SELECT * FROM namespaces ORDER BY name")
            return [self._load(conn, r, jids.get(r["id"], [])) for r in rows]

        if self._list_cache is None:
            generation = self._generation
            loaded = await self.db.read(_q)
            if generation != self._generation:  # changed while we read: do not keep it
                return loaded
            self._list_cache = loaded
        return list(self._list_cache)

    async def get(self, name: str) -> Namespace:
        if self._list_cache is not None:  # every namespace, as list() keeps it: no thread hop
            if self._by_name is None:
                self._by_name = {namespace.name: namespace for namespace in self._list_cache}
            if name not in self._by_name:
                raise NotFound(f"No namespace named {name!r}")
            return self._by_name[name]

        def _q(conn):
            row = conn.execute("SELECT * FROM namespaces WHERE name = ?", (name,)).fetchone()
            return self._load(conn, row) if row else None

        found = await self.db.read(_q)
        if found is None:
            raise NotFound(f"No namespace named {name!r}")
        return found

    async def find(self, name: str) -> Namespace | None:
        try:
            return await self.get(name)
        except NotFound:
            return None

    async def by_jid(self, jid: str) -> Namespace | None:
        def _q(conn):
            row = conn.execute(
                "SELECT n.* FROM namespaces n JOIN namespace_chats c ON c.namespace_id = n.id "
                "WHERE c.jid = ?", (jid,)
            ).fetchone()
            return self._load(conn, row) if row else None

        return await self.db.read(_q)

    async def create(self, fields: dict[str, Any]) -> Namespace:
        name = fields["name"]
        check_name(name)
        for jid in fields.get("chatJids", []):
            check_jid(jid)
        config = fields.get("containerConfig") or ContainerConfig()
        now = self.clock.now()
        ns_id = str(uuid.uuid4())
        entry = self.audit.entry("info", "config", f"namespace {name} created", group=name)

        def _tx(conn):
            if conn.execute("SELECT 1 FROM namespaces WHERE name = ?", (name,)).fetchone():
                raise Conflict(f"A namespace named {name!r} already exists")
            if fields.get("isMain"):
                self._check_no_other_main(conn, None)
            conn.execute(
                "INSERT INTO namespaces (id, name, description, trigger, requires_trigger, is_main, "
                "container_config, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (ns_id, name, fields.get("description", ""), fields.get("trigger", DEFAULT_TRIGGER),
                 int(fields.get("requiresTrigger", True)), int(fields.get("isMain", False)),
                 config.model_dump_json(), now, now),
            )
            self._set_jids(conn, ns_id, fields.get("chatJids", []))
            # Inside the transaction (this runs in a worker thread): a refused create
            # leaves no folder behind, and a folder that cannot be made rolls back the record.
            self._ensure_folder(name)
            entry.insert(conn)
            return self._load(conn, conn.execute("SELECT * FROM namespaces WHERE id = ?", (ns_id,)).fetchone())

        created = await self._write(_tx)
        entry.announce()
        await self._notify()
        return created

    async def update(self, name: str, fields: dict[str, Any]) -> Namespace:
        for jid in fields.get("chatJids") or []:
            check_jid(jid)
        now = self.clock.now()
        entry = self.audit.entry("info", "config", f"namespace {name} updated", group=name,
                                 details={"fields": sorted(k for k, v in fields.items() if v is not None)})

        def _tx(conn):
            row = conn.execute("SELECT * FROM namespaces WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise NotFound(f"No namespace named {name!r}")
            if fields.get("isMain"):
                self._check_no_other_main(conn, row["id"])
            columns = {
                "description": "description",
                "trigger": "trigger",
                "requiresTrigger": "requires_trigger",
                "isMain": "is_main",
            }
            for key, column in columns.items():
                if fields.get(key) is not None:
                    value = fields[key]
                    conn.execute(f"UPDATE namespaces SET {column} = ? WHERE id = ?",
                                 (int(value) if isinstance(value, bool) else value, row["id"]))
            if fields.get("containerConfig") is not None:
                conn.execute("UPDATE namespaces SET container_config = ? WHERE id = ?",
                             (fields["containerConfig"].model_dump_json(), row["id"]))
            if fields.get("chatJids") is not None:
                self._set_jids(conn, row["id"], fields["chatJids"])
            conn.execute("UPDATE namespaces SET updated_at = ? WHERE id = ?", (now, row["id"]))
            entry.insert(conn)
            return self._load(conn, conn.execute("SELECT * FROM namespaces WHERE id = ?", (row["id"],)).fetchone())

        updated = await self._write(_tx)
        entry.announce()
        await self._notify()
        return updated

    async def delete(self, name: str, *, purge: bool = False) -> None:
        if name == GLOBAL:
            raise NotFound(f"No namespace named {name!r}")
        entry = self.audit.entry("info", "config", f"namespace {name} deleted" + (" and purged" if purge else ""),
                                 group=name)

        def _tx(conn):
            if not conn.execute("DELETE FROM namespaces WHERE name = ?", (name,)).rowcount:
                raise NotFound(f"No namespace named {name!r}")
            entry.insert(conn)

        await self._write(_tx)
        if purge:
            await self.offload(self._purge_folders, name)
        entry.announce()
        await self._notify()

    @staticmethod
    def _check_no_other_main(conn: sqlite3.Connection, own_id: str | None) -> None:
        row = conn.execute("SELECT id, name FROM namespaces WHERE is_main = 1").fetchone()
        if row is not None and row["id"] != own_id:
            raise Conflict(f"Namespace {row['name']!r} is already the main namespace")

    @staticmethod
    def _set_jids(conn: sqlite3.Connection, ns_id: str, jids: Sequence[str]) -> None:
        if len(set(jids)) != len(jids):
            raise Invalid("chatJids lists a chat twice")
        taken = []
        for jid in jids:
            row = conn.execute(
                "SELECT n.name FROM namespace_chats c JOIN namespaces n ON n.id = c.namespace_id "
                "WHERE c.jid = ? AND c.namespace_id != ?", (jid, ns_id)
            ).fetchone()
            if row:
                taken.append({"chatJid": jid, "namespace": row[0]})
        if taken:
            raise Conflict("A chat can belong to only one namespace", details=taken)
        conn.execute("DELETE FROM namespace_chats WHERE namespace_id = ?", (ns_id,))
        conn.executemany(
            "INSERT INTO namespace_chats (jid, namespace_id, position) VALUES (?, ?, ?)",
            [(jid, ns_id, i) for i, jid in enumerate(jids)],  # type: ignore[var-annotated]
        )

    async def _write(self, tx):
        """A namespace write: the kept list is dropped as soon as the write ends (listeners run later)."""
        try:
            return await self.db.write(tx)
        finally:
            await self._invalidate()

    async def _notify(self) -> None:
        for listener in self.listeners:
            await listener()

    # -- folders and instructions ---------------------------------------

    def _ensure_folder(self, name: str) -> None:
        os.close(safefs.open_dir(self.settings.groups_dir, (name,)))

    def _purge_folders(self, name: str) -> None:
        settings = self.settings
        for root in (settings.groups_dir, settings.ipc_dir, settings.sessions_dir, settings.media_dir):
            try:
                fd = safefs.open_dir(root, create=False)
            except FileNotFoundError:
                continue
            try:
                safefs.remove(fd, name)  # fd-based: nothing a container planted inside is followed
            finally:
                os.close(fd)

    async def remove_unfinished_writes(self) -> None:
        """A kill during an instructions write leaves its temporary in the group folder, which is
        mounted into the agent's container. Call at start-up, while nothing writes."""

        def _sweep() -> list[str]:
            removed: list[str] = []
            try:
                root = safefs.open_dir(self.settings.groups_dir, create=False)
            except FileNotFoundError:
                return removed
            try:
                for folder in safefs.subfolders(root):
                    fd = safefs.open_dir(self.settings.groups_dir, (folder,), create=False)
                    try:
                        names = safefs.remove_matching(fd, lambda n: safefs.is_temporary_of(INSTRUCTIONS_FILE, n))
                    finally:
                        os.close(fd)
                    removed += [f"{folder}/{n}" for n in names]
            finally:
                os.close(root)
            return removed

        for path in await self.offload(_sweep):
            log.warning("removed %s, left by an instructions write that never finished", path)

    async def read_instructions(self, name: str) -> str:
        """The group's (or global) CLAUDE.md: a regular UTF-8 file in the group folder, never read
        through a link (the agent can write there); anything else is a clear Conflict."""
        if name != GLOBAL:
            await self.get(name)

        def _read() -> str:
            try:
                fd = safefs.open_dir(self.settings.groups_dir, (name,), create=False)
            except FileNotFoundError:
                return ""
            try:
                return safefs.read_regular(fd, INSTRUCTIONS_FILE, MAX_INSTRUCTIONS_BYTES).decode("utf-8")
            except FileNotFoundError:
                return ""
            finally:
                os.close(fd)

        return await self._instructions_io(name, self.offload(_read))

    async def write_instructions(self, name: str, text: str) -> None:
        if name != GLOBAL:
            await self.get(name)
        data = text.encode("utf-8")

        def _write() -> None:
            fd = safefs.open_dir(self.settings.groups_dir, (name,))
            try:
                kind = safefs.describe(fd, INSTRUCTIONS_FILE)
                if kind == "a symbolic link":
                    raise safefs.UnsafeEntry(errno.ELOOP, f"{INSTRUCTIONS_FILE} is a symbolic link")
                if kind not in ("missing", "a file"):
                    raise safefs.UnsafeEntry(errno.EINVAL, f"{INSTRUCTIONS_FILE} is {kind}")
                # A rename: a link swapped in meanwhile is replaced, never written through. As
                # durable as the store's commits (WAL, synchronous=NORMAL): never torn, but an OS
                # crash or power loss may bring back the previous file (the folder is not synced).
                safefs.write_atomic_at(fd, INSTRUCTIONS_FILE, data, sync_folder=False)
            finally:
                os.close(fd)

        entry = self.audit.entry("info", "config", f"instructions of {name} updated",
                                 group=None if name == GLOBAL else name, details={"bytes": len(data)})
        # One thread hop for the file and its audit entry (the file first, outside the transaction);
        # no entry when the file is refused. PUTs of one file that queue together write it once,
        # the last one's text, and each gets its entry.
        await self._instructions_io(name, self.db.write(entry.insert, before=_write,
                                                        replaces=(INSTRUCTIONS_FILE, name)))
        entry.announce()

    async def _instructions_io(self, name: str, io: Awaitable[T]) -> T:
        group = None if name == GLOBAL else name
        try:
            return await io
        except safefs.UnsafeEntry as exc:
            if exc.errno == errno.ELOOP:
                await self.audit.record("violation", "instructions",
                                        f"instructions of {name} refused: {exc.strerror}, not followed", group=group)
                raise Conflict(f"The instructions of {name!r} are refused: {exc.strerror} (links are never "
                               "followed); remove it from the group folder on the host", code="INSTRUCTIONS_LINK") \
                    from None
            raise Conflict(f"The instructions of {name!r} are refused: {exc.strerror}",
                           code="INSTRUCTIONS_NOT_A_FILE") from None
        except UnicodeDecodeError:
            raise Conflict(f"The instructions of {name!r} are not UTF-8 text", code="INSTRUCTIONS_NOT_TEXT") from None
        except OSError as exc:
            raise Conflict(f"The instructions of {name!r} cannot be used: {exc.strerror or exc}",
                           code="INSTRUCTIONS_UNAVAILABLE") from None

    async def merged_instructions(self, name: str) -> str:
        if name == GLOBAL:
            raise Invalid("'global' is not a group: name the group whose instructions to merge")
        group = await self.read_instructions(name)
        global_text = await self.read_instructions(GLOBAL)
        sections = []
        if global_text.strip():
            sections.append(f"# Global Instructions\n{global_text}")
        if group.strip():
            sections.append(f"# Group Instructions\n{group}")
        return "\n\n".join(sections)
