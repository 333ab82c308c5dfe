"""JSON from a container: a size cap and a nesting cap, checked before the parser sees it.

`json.loads` recurses once per nesting level, so 1,000 nested `[` raise RecursionError
(not a ValueError) and can take the whole process with it. `loads` measures the depth
with a flat scan first (no recursion) and refuses anything too large or too deep with
`BadJson`, a ValueError: callers that already catch ValueError stay correct.
"""
from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 32
# Every byte but the four brackets goes; openers become "(" and closers ")".
_BRACKETS = bytes.maketrans(b"[{]}", b"(())")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


class BadJson(ValueError):
    """Too large, too deep or not JSON at all."""


def too_deep(data: bytes, max_depth: int = MAX_DEPTH) -> bool:
    """Do arrays/objects in data nest deeper than max_depth? Found without recursion.

    Strings are cut out, the brackets kept; each pass removes the innermost pairs, so
    after max_depth passes a well-formed document of allowed depth is gone. Unbalanced
    brackets are judged by all the openers (json.loads may recurse into each before it
    finds the fault).
    """
    if data.count(b"[") + data.count(b"{") <= max_depth:
        return False
    # Strings go the way the parser reads them: escaped backslashes, then escaped quotes,
    # then every other piece between quotes (all in C: a 1 MiB frame takes milliseconds).
    plain = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    whole = shape = b"".join(plain.split(b'"')[::2]).translate(_BRACKETS, _NOT_BRACKETS)
    for _ in range(max_depth):
        if not shape:
            return False
        shape = shape.replace(b"()", b"")
    return bool(shape) and (b"()" in shape or whole.count(b"(") > max_depth)


def loads(data: bytes | str, *, max_bytes: int, max_depth: int = MAX_DEPTH) -> Any:
    """Parse untrusted JSON; raises BadJson (a ValueError) for anything we will not parse."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    if len(data) > max_bytes:
        raise BadJson(f"larger than {max_bytes} bytes")
    if too_deep(data, max_depth):
        raise BadJson(f"nested deeper than {max_depth} levels")
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:  # RecursionError cannot happen below MAX_DEPTH; belt and braces
        raise BadJson(f"not JSON: {exc}") from None


__all__ = ["BadJson", "MAX_DEPTH", "loads", "too_deep"]
