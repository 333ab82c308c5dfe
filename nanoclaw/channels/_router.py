"""Inbound routing: allowlist -> store -> namespace -> trigger -> the supervisor is told."""
from __future__ import annotations

import logging
import re
from typing import Any, Awaitable, Callable

from nanoclaw.audit import Audit
from nanoclaw.channels._activity import Activity
from nanoclaw.channels._base import Inbound
from nanoclaw.channels._outbox import Outbox
from nanoclaw.channels._store import ChatStore
from nanoclaw.namespaces import Namespace, Namespaces
from nanoclaw.security.senders import SenderAllowlist
from nanoclaw.supervisor import Supervisor

log = logging.getLogger("nanoclaw.channels")

NEW_SESSION_TEXT = "Started a new session: earlier messages are forgotten."


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


# Downloads a message's files into a group's folder (None: the chat has no group);
# returns the attachments saved and notes on those that were not.
FetchMedia = Callable[[Inbound, "str | None"], Awaitable[tuple[list[dict[str, Any]], list[str]]]]


class Router:
    """Stores what chats send; a triggering message wakes its group (`supervisor.notify`) and
    shows typing if a run for its chat is live (`activity`); `/new` after the trigger starts a
    fresh session instead (it never reaches the agent) and the chat is told (`outbox`)."""

    def __init__(self, store: ChatStore, namespaces: Namespaces, senders: SenderAllowlist, audit: Audit,
                 supervisor: Supervisor, outbox: Outbox, activity: Activity) -> None:
        self.store = store
        self.namespaces = namespaces
        self.senders = senders
        self.audit = audit
        self.supervisor = supervisor
        self.outbox = outbox
        self.activity = activity

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
            await self.supervisor.new_session(ns.name)
            try:
                await self.outbox.send(msg.chat_jid, NEW_SESSION_TEXT)
            except Exception as exc:  # the session is reset all the same
                log.warning("telling %s about its new session failed: %s", msg.chat_jid, exc)
        else:
            self.supervisor.notify(ns.name)
            self.activity.follow_up(msg.chat_jid)
        return True
