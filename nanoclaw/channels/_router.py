"""Inbound routing (allowlist -> store -> namespace -> trigger -> notify) and the
supervisor's view of a group's pending messages."""
from __future__ import annotations

import dataclasses
import html
import logging
import re
import sqlite3
from typing import Any, Awaitable, Callable

from nanoclaw.audit import Audit
from nanoclaw.channels._base import Inbound
from nanoclaw.channels._store import ChatStore, attachments
from nanoclaw.clock import iso
from nanoclaw.namespaces import Namespace, Namespaces
from nanoclaw.security.senders import SenderAllowlist
from nanoclaw.supervisor import MessageBatch

log = logging.getLogger("nanoclaw.channels")

# A prompt holds at most this many of the newest pending messages of a chat.
MAX_BATCH = 200


@dataclasses.dataclass(frozen=True)
class ChatCursor:
    chat_jid: str
    message_id: int


def _trigger_pattern(trigger: str) -> str:
    return rf"(?<![\w@]){re.escape(trigger)}(?!\w)"


def has_trigger(trigger: str, text: str) -> bool:
    """The trigger word appears on its own (case-insensitive): '@andy, hi' yes, '@Andyx' no."""
    return re.search(_trigger_pattern(trigger), text, re.IGNORECASE) is not None


def triggers(ns: Namespace, text: str, addressed: bool) -> bool:
    return ns.isMain or not ns.requiresTrigger or addressed or has_trigger(ns.trigger, text)


# What is left of "@Andy /new" once the trigger is gone; Telegram writes commands as /new@bot_name.
_NEW_COMMAND = re.compile(r"(?:@\w+[\s,:]*)*/new(?:@\w+)?[.!]?", re.IGNORECASE)


def is_new_command(ns: Namespace, text: str) -> bool:
    """The message is `/new` after the trigger (or a bot @mention): start a fresh session."""
    rest = re.sub(_trigger_pattern(ns.trigger) + r"[\s,:]*", " ", text, flags=re.IGNORECASE)
    return _NEW_COMMAND.fullmatch(rest.strip()) is not None


def format_prompt(rows: list[sqlite3.Row]) -> str:
    lines = ["<messages>"]
    for row in rows:
        files = "".join(
            f'\n<attachment kind="{html.escape(f["kind"])}" name="{html.escape(f["name"])}" '
            f'type="{html.escape(f["mimeType"] or "")}" size="{f["size"]}" path="{html.escape(f["path"])}"/>'
            for f in attachments(row))
        lines.append(
            f'<message sender="{html.escape(row["sender_name"] or row["sender_jid"])}" '
            f'time="{iso(row["ts"])}">{html.escape(row["content"], quote=False)}{files}</message>'
        )
    lines.append("</messages>")
    return "\n".join(lines)


# Downloads a message's files into a group's folder (None: the chat has no group);
# returns the attachments saved and notes on those that were not.
FetchMedia = Callable[[Inbound, "str | None"], Awaitable[tuple[list[dict[str, Any]], list[str]]]]


class Router:
    """notify: called with a group name once a triggering message for it is stored
    (the supervisor's notify_messages). new_session: awaited with (group, chat JID) when a
    chat sends `/new` after the trigger (the supervisor's new_session); such a message never
    reaches the agent."""

    def __init__(self, store: ChatStore, namespaces: Namespaces, senders: SenderAllowlist, audit: Audit,
                 notify: Callable[[str], None] | None = None,
                 new_session: Callable[[str, str], Awaitable[None]] | None = None) -> None:
        self.store = store
        self.namespaces = namespaces
        self.senders = senders
        self.audit = audit
        self.notify = notify
        self.new_session = new_session
        # Called with the chat's JID whenever a triggering message is stored (typing for follow-ups).
        self.triggered: Callable[[str], None] | None = None

    async def deliver(self, msg: Inbound, fetch: FetchMedia | None = None) -> bool:
        """Route one inbound message; True when it was new and stored. Its files are
        downloaded (with `fetch`) before it is stored, so the agent never sees it without them."""
        if not await self.senders.is_allowed(msg.sender_jid, msg.chat_jid):
            await self.audit.record("warning", "sender", f"dropped a message from {msg.sender_jid} in "
                                    f"{msg.chat_jid}: sender not on the allowlist",
                                    details={"channel": msg.channel})
            return False
        ns = await self.namespaces.by_jid(msg.chat_jid)
        files: list[dict[str, Any]] = []
        if msg.media and fetch is not None:
            if await self.store.seen(msg.channel, msg.external_id):
                log.info("ignored a repeated delivery of %s message %s", msg.channel, msg.external_id)
                return False
            files, notes = await fetch(msg, ns.name if ns else None)
            msg.text = "\n".join(t for t in (msg.text, *notes) if t)
        if await self.store.add_inbound(msg, files) is None:
            log.info("ignored a repeated delivery of %s message %s", msg.channel, msg.external_id)
            return False
        if ns is None or not triggers(ns, msg.text, msg.addressed):
            return True
        if is_new_command(ns, msg.text):
            if self.new_session is not None:
                await self.new_session(ns.name, msg.chat_jid)
        elif self.notify is not None:
            self.notify(ns.name)
            if self.triggered is not None:
                self.triggered(msg.chat_jid)
        return True

    async def pending(self, group: str) -> MessageBatch | None:
        """The oldest chat of the group with a triggering message past its cursor: all its
        pending messages (untriggered ones included, as context)."""
        ns = await self.namespaces.find(group)
        if ns is None or not ns.chatJids:
            return None
        best: tuple[int, str, list[sqlite3.Row], int] | None = None
        for jid, found in (await self.store.since_cursor(group, ns.chatJids)).items():
            # /new was handled when it arrived; the agent never sees it.
            rows = [r for r in found if not is_new_command(ns, r["content"])]
            first = next((r["id"] for r in rows if triggers(ns, r["content"], bool(r["addressed"]))), None)
            if first is not None and (best is None or first < best[0]):
                best = (first, jid, rows, found[-1]["id"])
        if best is None:
            return None
        _, jid, rows, last = best
        rows = rows[-MAX_BATCH:]
        return MessageBatch(prompt=format_prompt(rows), chat_jid=jid, cursor=ChatCursor(jid, last),
                            attachments=[f for row in rows for f in attachments(row)])

    async def advance(self, group: str, cursor: object) -> None:
        if not isinstance(cursor, ChatCursor):
            raise TypeError(f"not a cursor of the channel layer: {cursor!r}")
        await self.store.advance(group, cursor.chat_jid, cursor.message_id)
