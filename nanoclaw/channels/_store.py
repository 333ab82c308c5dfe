"""Chats, messages, cursors and channel configs in the SQLite store."""
from __future__ import annotations

import json
import sqlite3
from typing import Any

from nanoclaw.channels._base import Inbound
from nanoclaw.clock import Clock, iso
from nanoclaw.store import Database


def _message(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "chatJid": row["chat_jid"],
        "sender": row["sender_jid"],
        "senderName": row["sender_name"],
        "content": row["content"],
        "timestamp": iso(row["ts"]),
        "isFromBot": bool(row["is_bot"]),
        "attachments": attachments(row),
    }


def attachments(row: sqlite3.Row) -> list[dict[str, Any]]:
    return json.loads(row["attachments"]) if row["attachments"] else []


def _touch_chat(conn: sqlite3.Connection, jid: str, channel: str, name: str | None, is_group: bool,
                ts: float) -> None:
    conn.execute(
        "INSERT INTO chats (jid, channel, name, is_group, last_message_at) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (jid) DO UPDATE SET name = coalesce(excluded.name, chats.name), "
        "is_group = max(chats.is_group, excluded.is_group), "
        "last_message_at = max(chats.last_message_at, excluded.last_message_at)",
        (jid, channel, name, int(is_group), ts),
    )


class ChatStore:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    # -- messages -------------------------------------------------------------

    async def add_inbound(self, msg: Inbound, files: list[dict[str, Any]] | None = None) -> int | None:
        """Store an inbound message and its chat; None when this platform id was stored before."""

        def _tx(conn: sqlite3.Connection) -> int | None:
            cursor = conn.execute(
                "INSERT INTO messages (channel, chat_jid, external_id, sender_jid, sender_name, content, ts, "
                "is_bot, addressed, attachments) VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, ?) "
                "ON CONFLICT (channel, external_id) DO NOTHING",
                (msg.channel, msg.chat_jid, msg.external_id, msg.sender_jid, msg.sender_name, msg.text,
                 msg.timestamp, int(msg.addressed), json.dumps(files) if files else None),
            )
            if cursor.rowcount == 0:
                return None
            _touch_chat(conn, msg.chat_jid, msg.channel, msg.chat_name, msg.is_group, msg.timestamp)
            return cursor.lastrowid

        return await self.db.write(_tx)

    async def seen(self, channel: str, external_id: str) -> bool:
        """Whether this platform message is stored already (a repeated delivery)."""
        return await self.db.fetchone("SELECT 1 FROM messages WHERE channel = ? AND external_id = ?",
                                      (channel, external_id)) is not None

    async def add_outbound(self, channel: str, chat_jid: str, text: str, sender: str,
                           files: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Store what the bot sent; bot messages never reach an agent as input."""
        now = self.clock.now()

        def _tx(conn: sqlite3.Connection) -> dict[str, Any]:
            cursor = conn.execute(
                "INSERT INTO messages (channel, chat_jid, sender_jid, sender_name, content, ts, is_bot, attachments) "
                "VALUES (?, ?, ?, ?, ?, ?, 1, ?)",
                (channel, chat_jid, sender, sender, text, now, json.dumps(files) if files else None),
            )
            _touch_chat(conn, chat_jid, channel, None, False, now)
            return _message(conn.execute("SELECT * FROM messages WHERE id = ?", (cursor.lastrowid,)).fetchone())

        return await self.db.write(_tx)

    async def messages(self, chat_jid: str, *, limit: int, before: float | None) -> list[dict[str, Any]]:
        sql = "SELECT * FROM messages WHERE chat_jid = ?"
        params: list[Any] = [chat_jid]
        if before is not None:
            sql += " AND ts < ?"
            params.append(before)
        rows = await self.db.fetchall(sql + " ORDER BY ts DESC, id DESC LIMIT ?", (*params, limit))
        return [_message(r) for r in rows]

    async def chats(self, *, channel: str | None, limit: int) -> list[dict[str, Any]]:
        sql = (
            "SELECT c.*, n.name AS namespace FROM chats c "
            "LEFT JOIN namespace_chats nc ON nc.jid = c.jid LEFT JOIN namespaces n ON n.id = nc.namespace_id"
        )
        params: list[Any] = []
        if channel is not None:
            sql += " WHERE c.channel = ?"
            params.append(channel)
        rows = await self.db.fetchall(sql + " ORDER BY c.last_message_at DESC, c.jid LIMIT ?", (*params, limit))
        return [
            {
                "jid": r["jid"],
                "channel": r["channel"],
                "name": r["name"],
                "isGroup": bool(r["is_group"]),
                "lastMessageAt": iso(r["last_message_at"]),
                "namespace": r["namespace"],
            }
            for r in rows
        ]

    async def since_cursor(self, group: str, chat_jids: list[str]) -> dict[str, list[sqlite3.Row]]:
        """Per chat, the users' messages past the group's cursor, oldest first."""

        def _q(conn: sqlite3.Connection) -> dict[str, list[sqlite3.Row]]:
            found = {}
            for jid in chat_jids:
                row = conn.execute("SELECT message_id FROM group_cursors WHERE group_name = ? AND chat_jid = ?",
                                   (group, jid)).fetchone()
                rows = conn.execute(
                    "SELECT * FROM messages WHERE chat_jid = ? AND id > ? AND is_bot = 0 ORDER BY id",
                    (jid, row[0] if row else 0),
                ).fetchall()
                if rows:
                    found[jid] = rows
            return found

        return await self.db.read(_q)

    async def advance(self, group: str, chat_jid: str, message_id: int) -> None:
        await self.db.execute(
            "INSERT INTO group_cursors (group_name, chat_jid, message_id) VALUES (?, ?, ?) "
            "ON CONFLICT (group_name, chat_jid) DO UPDATE SET message_id = max(message_id, excluded.message_id)",
            (group, chat_jid, message_id),
        )

    async def move_chat(self, old: str, new: str) -> bool:
        """Give a chat a new JID everywhere, in one transaction. False when nothing had the old one."""

        def _tx(conn: sqlite3.Connection) -> bool:
            moved = conn.execute("UPDATE messages SET chat_jid = ? WHERE chat_jid = ?", (new, old)).rowcount
            # Where the new JID is already present (both ids were seen), keep the new row.
            for table, column in (("chats", "jid"), ("group_cursors", "chat_jid"), ("namespace_chats", "jid")):
                moved += conn.execute(f"UPDATE OR IGNORE {table} SET {column} = ? WHERE {column} = ?",
                                      (new, old)).rowcount
                conn.execute(f"DELETE FROM {table} WHERE {column} = ?", (old,))
            return moved > 0

        return await self.db.write(_tx)

    # -- channel configs --------------------------------------------------------

    async def configs(self) -> list[sqlite3.Row]:
        return await self.db.fetchall("SELECT * FROM channel_configs ORDER BY name")

    async def save_config(self, name: str, sealed: str, account: str) -> None:
        """Store a channel's credentials, forgetting any state of an earlier connection."""
        now = self.clock.now()

        def _tx(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO channel_configs (name, credentials, account, connected_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET credentials = excluded.credentials, "
                "account = excluded.account, connected_at = excluded.connected_at",
                (name, sealed, account, now),
            )
            conn.execute("DELETE FROM channel_state WHERE channel = ?", (name,))

        await self.db.write(_tx)

    async def delete_config(self, name: str) -> bool:
        def _tx(conn: sqlite3.Connection) -> bool:
            conn.execute("DELETE FROM channel_state WHERE channel = ?", (name,))
            return conn.execute("DELETE FROM channel_configs WHERE name = ?", (name,)).rowcount > 0

        return await self.db.write(_tx)

    async def load_state(self, channel: str, key: str) -> str | None:
        row = await self.db.fetchone("SELECT value FROM channel_state WHERE channel = ? AND key = ?",
                                     (channel, key))
        return row[0] if row else None

    async def save_state(self, channel: str, key: str, value: str) -> None:
        await self.db.execute(
            "INSERT INTO channel_state (channel, key, value) VALUES (?, ?, ?) "
            "ON CONFLICT (channel, key) DO UPDATE SET value = excluded.value",
            (channel, key, value),
        )
