"""Secrets at rest: AES-256-GCM with a key file in the config dir (mode 0600).

Every plaintext that passes through the box is remembered (in memory only) so
that `redact()` can scrub it from anything about to be logged or audited.
"""
from __future__ import annotations

import base64
import logging
import os
import re
import secrets as _random
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from nanoclaw.filemodes import private_dir

KEY_FILE = "secret.key"
_PREFIX = "v1:"
# A Telegram bot token in a URL path (/bot<id>:<secret>/), scrubbed even if never seen before.
_BOT_TOKEN_PATH = re.compile(r"/bot\d+:[A-Za-z0-9_-]+")


class SecretBox:
    def __init__(self, config_dir: Path) -> None:
        self.key_path = Path(config_dir) / KEY_FILE
        self._aead: AESGCM | None = None
        self._known: set[str] = set()

    def _cipher(self) -> AESGCM:
        if self._aead is None:
            self._aead = AESGCM(_load_or_create_key(self.key_path))
        return self._aead

    def encrypt(self, plaintext: str, *, context: str = "") -> str:
        self.remember(plaintext)
        nonce = os.urandom(12)
        sealed = self._cipher().encrypt(nonce, plaintext.encode(), context.encode())
        return _PREFIX + base64.b64encode(nonce + sealed).decode()

    def decrypt(self, token: str, *, context: str = "") -> str:
        if not token.startswith(_PREFIX):
            raise ValueError("not a sealed secret")
        raw = base64.b64decode(token[len(_PREFIX):])
        try:
            plaintext = self._cipher().decrypt(raw[:12], raw[12:], context.encode()).decode()
        except InvalidTag:
            raise ValueError(f"a stored secret cannot be decrypted with {self.key_path}: "
                             "it was sealed with another key (restore the original secret.key)") from None
        self.remember(plaintext)
        return plaintext

    def remember(self, plaintext: str) -> None:
        if len(plaintext) >= 6:
            self._known.add(plaintext)

    def redact(self, text: str) -> str:
        text = _BOT_TOKEN_PATH.sub("/bot[REDACTED]", text)
        for secret in self._known:
            if secret in text:
                text = text.replace(secret, "[REDACTED]")
        return text


def mask(secret: str) -> str:
    """What an answer may show of a secret: its length class and last 4 characters."""
    if len(secret) <= 8:
        return "****"
    return "****" + secret[-4:]


def _load_or_create_key(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        private_dir(path.parent)
        key = AESGCM.generate_key(bit_length=256)
        tmp = path.with_name(f".{path.name}.{_random.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)  # never overwrite a key another process just made
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
        data = path.read_bytes()
    if len(data) != 32:
        raise ValueError(f"{path} does not hold a 256-bit key")
    return data


class RedactingFilter(logging.Filter):
    """Scrubs known secrets from every log record."""

    def __init__(self, box: SecretBox) -> None:
        super().__init__()
        self.box = box

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = self.box.redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True
