"""A nesting cap for JSON text, checked by a flat scan before any parser recurses into it."""
from __future__ import annotations

import re
from itertools import accumulate

MAX_DEPTH = 64
# A JSON string (escapes included; an unterminated one runs to the end), and a bracket.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?', re.S)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = [0] * 256  # +1 for an opening bracket, -1 for a closing one
for _byte in b"[{":
    _STEP[_byte] = 1
for _byte in b"]}":
    _STEP[_byte] = -1


class TooDeep(ValueError):
    """The JSON text nests arrays/objects deeper than allowed."""


def check_depth(raw: bytes | str, max_depth: int = MAX_DEPTH) -> None:
    """Raise TooDeep when raw opens more than max_depth arrays/objects at once.

    Brackets inside strings do not count; the text need not be valid JSON (the
    parser judges that afterwards). Linear time, no recursion: the strings are cut
    out, the brackets kept, and the running depth summed in C (itertools).
    """
    text = raw.encode() if isinstance(raw, str) else raw
    if text.count(b"[") + text.count(b"{") <= max_depth:
        return
    brackets = _STRING.sub(b"", text).translate(None, _NOT_BRACKETS)
    if max(accumulate(map(_STEP.__getitem__, brackets)), default=0) > max_depth:
        raise TooDeep(f"JSON nests deeper than {max_depth} levels")
