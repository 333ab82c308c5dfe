"""The fake Anthropic API as Claude Code sees it.

Claude Code streams every Messages call and makes side calls of its own (a title, a
summary ...) besides its agent loop. Scripted replies go only to agent-loop calls, the ones
that offer tools; side calls get the deterministic default answer. Streaming itself is the
FakeAnthropic's (`"stream": true` -> Server-Sent Events).
"""
from __future__ import annotations

import trio

from . import serve_on_loopback
from .anthropic import FakeAnthropic, Recorded


class ClaudeCodeFake(FakeAnthropic):
    async def _answer(self, scope, headers: dict, body, send) -> None:
        if isinstance(body, dict) and body.get("tools"):
            return await super()._answer(scope, headers, body, send)
        scripted, self.replies = self.replies, []
        try:
            await super()._answer(scope, headers, body, send)
        finally:
            self.replies = scripted + self.replies

    @property
    def agent_requests(self) -> list[Recorded]:
        """The agent loop's calls: POST /v1/messages offering tools."""
        return [r for r in self.messages_requests if isinstance(r.body, dict) and r.body.get("tools")]


async def serve_claude_code_fake(*, api_key: str | None = None, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """`fake = await nursery.start(serve_claude_code_fake)`; serves until cancelled."""
    fake = ClaudeCodeFake(api_key)
    async with trio.open_nursery() as nursery:
        fake.url = await serve_on_loopback(nursery, fake)
        task_status.started(fake)
