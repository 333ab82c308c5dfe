"""Keep the real credential from flowing back: response headers and streamed bodies are scrubbed."""
from __future__ import annotations

import json
from urllib.parse import quote

MARKER = b"[REDACTED]"


def _mask(length: int) -> bytes:
    """The marker cut or padded with '*' to `length`: a body keeps its length (and Content-Length holds)."""
    return (MARKER + b"*" * length)[:length]


def secret_forms(credential: str) -> list[bytes]:
    """The credential as an echo would carry it: as is, JSON-escaped, percent-encoded; longest first."""
    forms = {credential, json.dumps(credential)[1:-1], quote(credential, safe="")}
    return sorted((form.encode() for form in forms if form), key=len, reverse=True)


def redact(data: bytes, forms: list[bytes]) -> bytes:
    for form in forms:
        if form in data:
            data = data.replace(form, _mask(len(form)))
    return data


class Redactor:
    """Streams a body through, masking every form of the secret. What could still become one
    (a tail that starts a form) is held back until the next chunk or flush(): a value split
    across chunks is caught, and nothing else is delayed."""

    def __init__(self, forms: list[bytes]) -> None:
        self.forms = forms
        self._held = b""

    def feed(self, chunk: bytes) -> bytes:
        data = redact(self._held + chunk, self.forms)
        keep = self._partial(data)
        self._held = data[len(data) - keep:] if keep else b""
        return data[:len(data) - keep]

    def flush(self) -> bytes:
        held, self._held = self._held, b""
        return held

    def _partial(self, data: bytes) -> int:
        """Length of the longest tail of data that is a proper prefix of some form."""
        best = 0
        for form in self.forms:
            first = form[:1]
            start = max(0, len(data) - len(form) + 1)
            i = data.find(first, start)
            while i != -1 and len(data) - i > best:
                if form.startswith(data[i:]):
                    best = len(data) - i
                    break
                i = data.find(first, i + 1)
        return best
