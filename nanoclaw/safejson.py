"""JSON from a container: a size cap and a nesting cap, checked before the parser sees it.

`json.loads` recurses once per nesting level, so 1,000 nested `[` raise RecursionError
(not a ValueError) and can take the whole process with it. `loads` measures the depth
with the flat scan of `nanoclaw.jsondepth` first (no recursion) and refuses anything too
large or too deep with `BadJson`, a ValueError: callers that already catch ValueError
stay correct.
"""
from __future__ import annotations

import json
from typing import Any

from nanoclaw.jsondepth import TooDeep, check_depth

MAX_DEPTH = 32


class BadJson(ValueError):
    """Too large, too deep or not JSON at all."""


def too_deep(data: bytes, max_depth: int = MAX_DEPTH) -> bool:
    """Do arrays/objects in data nest deeper than max_depth? Found without recursion."""
    try:
        check_depth(data, max_depth)
    except TooDeep:
        return True
    return False


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
