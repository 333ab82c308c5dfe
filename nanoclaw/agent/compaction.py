"""Keeping a session's history under its token budget.

Tokens are estimated (characters / 4 of the JSON, an image as IMAGE_TOKENS). When a
model call would go over the budget, the older part of the history is replaced by a
summary the model writes in one extra call; the recent part (at least the last step)
stays as it was. A cut only falls where the history stays valid for the APIs: before an
assistant message, or before a user message that carries no tool results.
"""
from __future__ import annotations

import json
from collections.abc import Callable

DEFAULT_BUDGET = 100_000
IMAGE_TOKENS = 1600
KEEP_SHARE = 0.5        # the recent part kept verbatim uses at most this share of the budget
TRANSCRIPT_SHARE = 0.8  # the summariser sees at most this share of the budget of transcript
SUMMARY_HEAD = "[Summary of the earlier conversation]\n"
SUMMARY_SYSTEM = ("You summarise conversations between a user and an AI assistant that uses tools, so that "
                  "the assistant can carry on without the full history.")
SUMMARY_ASK = ("Summarise the conversation below for your own later use: the user's goals and requests, "
               "decisions made, facts learned, files created or changed (with paths), open tasks and anything "
               "the user asked you to remember. Be concise but keep every detail needed to carry on.\n\n")


def estimate(value: object) -> int:
    """Estimated tokens of a message list, a message or a string."""
    if isinstance(value, str):
        return len(value) // 4 + 1
    if isinstance(value, list):
        return sum(estimate(item) for item in value)
    if isinstance(value, dict):
        if value.get("type") == "image":
            return IMAGE_TOKENS
        content = value.get("content")
        if isinstance(content, list):
            rest = {k: v for k, v in value.items() if k != "content"}
            return estimate(json.dumps(rest)) + estimate(content)
    return estimate(json.dumps(value))


_sizes: dict[int, tuple[dict, int]] = {}


def history_size(messages: list) -> int:
    """estimate(messages), remembering each message's size (a step re-checks the whole history)."""
    total = 0
    for message in messages:
        known = _sizes.get(id(message))
        if known is None or known[0] is not message:
            known = _sizes[id(message)] = (message, estimate(message))
        total += known[1]
    if len(_sizes) > 4 * len(messages) + 100:
        _sizes.clear()
    return total


def _cut_points(messages: list) -> list[int]:
    points = []
    for index, message in enumerate(messages):
        content = message.get("content")
        has_results = isinstance(content, list) and any(
            isinstance(b, dict) and b.get("type") == "tool_result" for b in content)
        if index > 0 and (message.get("role") == "assistant" or not has_results):
            points.append(index)
    return points


def _is_summary(message: dict) -> bool:
    content = message.get("content")
    if isinstance(content, list) and content and isinstance(content[0], dict):
        content = content[0].get("text")
    return isinstance(content, str) and content.startswith(SUMMARY_HEAD)


def transcript(messages: list, limit: int) -> str:
    """The messages as plain text for the summariser, at most `limit` characters (head and tail)."""
    lines = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            lines.append(f"{message.get('role')}: {content}")
            continue
        for block in content or []:
            kind = block.get("type")
            if kind == "text":
                lines.append(f"{message.get('role')}: {block.get('text', '')}")
            elif kind == "tool_use":
                lines.append(f"assistant called {block.get('name')}: {json.dumps(block.get('input'))[:2000]}")
            elif kind == "tool_result":
                body = block.get("content")
                body = body if isinstance(body, str) else json.dumps(body)
                lines.append(f"tool result{' (error)' if block.get('is_error') else ''}: {body[:4000]}")
            elif kind == "image":
                lines.append(f"{message.get('role')}: [an image]")
    text = "\n".join(lines)
    if len(text) > limit:
        half = limit // 2
        text = f"{text[:half]}\n[... {len(text) - 2 * half} characters left out ...]\n{text[-half:]}"
    return text


def compact(messages: list, budget: int, overhead: int, summarise: Callable[[str, list], str]) -> list | None:
    """A shorter history when `messages` (+ `overhead` tokens of system and tools) is over `budget`.

    None when nothing needs to (or can) be done. `summarise(system, messages)` makes the one model call.
    """
    if overhead + history_size(messages) <= budget:
        return None
    points = _cut_points(messages)
    if not points:
        return None
    keep_budget = max(0, budget * KEEP_SHARE - overhead)
    cut = next((p for p in points if history_size(messages[p:]) <= keep_budget), points[-1])
    old, kept = messages[:cut], messages[cut:]
    if len(old) == 1 and _is_summary(old[0]):
        return None  # only a summary is left to fold: the recent steps alone are over the budget
    summary = summarise(SUMMARY_SYSTEM, [{"role": "user", "content": SUMMARY_ASK + transcript(
        old, int(budget * TRANSCRIPT_SHARE * 4))}]).strip() or "(no summary)"
    head = SUMMARY_HEAD + summary
    if kept[0].get("role") == "assistant":
        return [{"role": "user", "content": head}] + kept
    first = kept[0]["content"]
    if isinstance(first, str):
        merged = f"{head}\n\n{first}"
    else:
        merged = [{"type": "text", "text": head + "\n\n"}] + list(first)
    return [{"role": "user", "content": merged}] + kept[1:]
