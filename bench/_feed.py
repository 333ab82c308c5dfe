"""The supervisor's feed in benchmarks: one inbox per group whose newest message is the
prompt; answers are counted, and the next answer of a group can be waited for."""
from __future__ import annotations

from collections import Counter

import trio

from nanoclaw.supervisor import RunSink, Work, WorkFeed


class BenchFeed(WorkFeed):
    def __init__(self) -> None:
        self.inbox: dict[str, list[str]] = {}
        self.cursor: dict[str, int] = {}
        self.answers: Counter = Counter()
        self._answered: dict[str, trio.Event] = {}

    def say(self, group: str, text: str) -> trio.Event:
        """A message for group; the event is set by the group's next answer."""
        self.inbox.setdefault(group, []).append(text)
        return self.next_answer(group)

    def next_answer(self, group: str) -> trio.Event:
        event = self._answered[group] = trio.Event()
        return event

    def _newest(self, group: str) -> str | None:
        messages = self.inbox.get(group, [])
        return messages[-1] if self.cursor.get(group, 0) < len(messages) else None

    async def next_work(self, group):
        text = self._newest(group)
        if text is None:
            return None
        return Work(text, kind="message", sink=_Answers(self, group), chat_jid=f"tg:{group}", group_session=True)

    async def follow_up(self, run, write):
        text = self._newest(run.group)
        if text is None:
            return "none"
        await write(text, [])
        self.cursor[run.group] = len(self.inbox[run.group])
        return "taken"


class _Answers(RunSink):
    def __init__(self, feed: BenchFeed, group: str) -> None:
        self.feed, self.group = feed, group

    async def result(self, run, text):
        feed = self.feed
        feed.cursor[self.group] = len(feed.inbox[self.group])
        feed.answers[self.group] += 1
        feed._answered.setdefault(self.group, trio.Event()).set()
