"""Host -> container input files: follow-up messages and the `_close` sentinel."""
from __future__ import annotations

import json
import secrets
import time
from pathlib import Path

from nanoclaw.audit import Audit
from nanoclaw.ipc._tree import write_input_audited


async def write_follow_up(ipc_dir: Path, text: str, *, audit: Audit | None = None, offload=None,
                          attachments: list[dict] | None = None) -> str:
    """Write one follow-up atomically into the container's input folder (never through a link the
    container planted: see nanoclaw.ipc._tree); returns its file name."""
    name = f"{int(time.time() * 1000)}-{secrets.token_hex(4)}.json"
    message = {"type": "message", "text": text, **({"attachments": attachments} if attachments else {})}
    data = json.dumps(message).encode()
    await write_input_audited(audit, ipc_dir.parent.name, ipc_dir, name, data, offload=offload)
    return name


async def write_close(audit: Audit | None, group: str, ipc_dir: Path, *, offload=None) -> None:
    """Ask the container to finish: it exits once its current turn is done."""
    await write_input_audited(audit, group, ipc_dir, "_close", b"", offload=offload)
