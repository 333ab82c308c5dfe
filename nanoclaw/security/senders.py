"""Sender allowlist: which chat identities may reach the agents."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from nanoclaw.audit import Audit
from nanoclaw.store import Database

SETTINGS_KEY = "sender_allowlist"


class SenderEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    chatJid: str = Field(min_length=3, max_length=200, description="A sender or chat id, e.g. tg:123456789")
    label: str = Field(default="", max_length=200)


class SenderAllowlistModel(BaseModel):
    # Unknown keys are refused: {"enable": true} must not leave the allowlist off unnoticed.
    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    entries: list[SenderEntry] = Field(default_factory=list, max_length=10000)


class SenderAllowlist:
    def __init__(self, db: Database, audit: Audit) -> None:
        self.db = db
        self.audit = audit
        self._cache: SenderAllowlistModel | None = None

    async def get(self) -> SenderAllowlistModel:
        if self._cache is None:
            saved = await self.db.get_setting(SETTINGS_KEY)
            self._cache = (
                SenderAllowlistModel.model_validate_json(saved) if saved is not None else SenderAllowlistModel()
            )
        return self._cache

    async def set(self, value: SenderAllowlistModel) -> SenderAllowlistModel:
        await self.db.set_setting(SETTINGS_KEY, value.model_dump_json())
        self._cache = value
        await self.audit.record("info", "config", "sender allowlist updated",
                                details={"enabled": value.enabled, "entries": len(value.entries)})
        return value

    async def is_allowed(self, sender_jid: str, chat_jid: str | None = None) -> bool:
        """May this sender (in this chat) reach the agents? Everyone may when disabled.

        An entry matches the sender's id or the chat's id, so a whole chat can be allowed.
        """
        current = await self.get()
        if not current.enabled:
            return True
        allowed = {e.chatJid for e in current.entries}
        return sender_jid in allowed or (chat_jid is not None and chat_jid in allowed)
