"""Agent text on its way to a chat: internal notes removed, long answers split for a platform."""
from __future__ import annotations

import re

_INTERNAL = re.compile(r"<internal>.*?</internal>", re.DOTALL)


def strip_internal(text: str) -> str:
    """Remove the agent's <internal>...</internal> notes and surrounding blank space."""
    return _INTERNAL.sub("", text).strip()


def split_text(text: str, limit: int) -> list[str]:
    """Pieces of at most `limit` characters, cut between paragraphs where that leaves a piece
    at least half full, else at line ends, and inside a line only when it is longer than `limit`."""
    parts: list[str] = []
    current = ""
    for line in text.splitlines(keepends=True):
        while len(line) > limit:
            if current:
                parts.append(current)
                current = ""
            parts.append(line[:limit])
            line = line[limit:]
        if len(current) + len(line) > limit:
            cut = current.rfind("\n\n")
            if cut >= limit // 2 and len(current) - cut - 2 + len(line) <= limit:
                parts.append(current[:cut + 1])
                current = current[cut + 2:]
            else:
                parts.append(current)
                current = ""
        current += line
    if current:
        parts.append(current)
    # Platforms trim a piece's trailing newline and refuse blank text anyway.
    return [p.rstrip("\n") for p in parts if p.strip()]
