"""Chat messages as the supervisor's work: a group's pending batch becomes a run whose
results go back to the chat, or a follow-up for the group's live container."""
from __future__ import annotations

import dataclasses
import html
import sqlite3

from nanoclaw.channels._outbox import Outbox
from nanoclaw.channels._router import is_new_command, triggers
from nanoclaw.channels._store import ChatStore, attachments
from nanoclaw.clock import iso
from nanoclaw.namespaces import Namespaces
from nanoclaw.supervisor import ActiveRun, FollowUp, InputWriter, RunSink, Work, WorkFeed

# A prompt holds at most this many of the newest pending messages of a chat.
MAX_BATCH = 200


@dataclasses.dataclass(frozen=True)
class MessageBatch:
    """A chat's messages since its group's cursor, formatted as one prompt."""

    prompt: str
    chat_jid: str
    # The newest message in the batch: the group's cursor moves here once the agent has it.
    last_id: int
    # Files that came with the messages: [{kind, name, mimeType, size, path}] (container paths).
    attachments: list[dict] = dataclasses.field(default_factory=list)


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


class ChatSink(RunSink):
    """A chat batch's run: every result goes to the chat; the cursor moves past the batch once the
    first one got there (a run that fails before is retried with the same messages)."""

    def __init__(self, feed: ChatFeed, group: str, batch: MessageBatch) -> None:
        self.feed = feed
        self.group = group
        self.batch = batch
        self.answered = False

    async def result(self, run: ActiveRun, text: str) -> None:
        await self.feed.outbox.send(self.batch.chat_jid, text)
        if not self.answered:
            await self.feed.advance(self.group, self.batch)
            self.answered = True

    async def notice(self, run: ActiveRun, text: str) -> None:
        await self.feed.outbox.send(self.batch.chat_jid, text)


class ChatFeed(WorkFeed):
    """The supervisor's feed of chat messages (it is told of new ones by the Router)."""

    def __init__(self, store: ChatStore, namespaces: Namespaces, outbox: Outbox) -> None:
        self.store = store
        self.namespaces = namespaces
        self.outbox = outbox

    async def next_work(self, group: str) -> Work | None:
        batch = await self.pending(group)
        if batch is None:
            return None
        return Work(batch.prompt, kind="message", sink=ChatSink(self, group, batch), chat_jid=batch.chat_jid,
                    attachments=batch.attachments, group_session=True)

    async def follow_up(self, run: ActiveRun, write: InputWriter) -> FollowUp:
        batch = await self.pending(run.group)
        if batch is None:
            return "none"
        if batch.chat_jid != run.chat_jid:
            return "own container"  # the live container answers another chat
        await write(batch.prompt, batch.attachments)
        # The agent has the messages now; a later crash must not replay them.
        await self.advance(run.group, batch)
        return "taken"

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
        return MessageBatch(prompt=format_prompt(rows), chat_jid=jid, last_id=last,
                            attachments=[f for row in rows for f in attachments(row)])

    async def advance(self, group: str, batch: MessageBatch) -> None:
        await self.store.advance(group, batch.chat_jid, batch.last_id)
