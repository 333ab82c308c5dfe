"""A nesting cap for JSON text, checked by a flat scan before any parser recurses into it."""
from __future__ import annotations

MAX_DEPTH = 64


class TooDeep(ValueError):
    """The JSON text nests arrays/objects deeper than allowed."""


def check_depth(raw: bytes | str, max_depth: int = MAX_DEPTH) -> None:
    """Raise TooDeep when raw opens more than max_depth arrays/objects at once.

    Brackets inside strings do not count; the text need not be valid JSON (the
    parser judges that afterwards). Linear time, no recursion.
    """
    text = raw.encode() if isinstance(raw, str) else raw
    depth = 0
    in_string = escaped = False
    for byte in text:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > max_depth:
                raise TooDeep(f"JSON nests deeper than {max_depth} levels")
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
