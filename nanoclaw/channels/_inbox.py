"""Inbound files: downloaded through the platform (the container never sees a token) into
the group's inbox/YYYY-MM-DD/ folder, at most MAX_MEDIA bytes each."""
from __future__ import annotations

import logging
import mimetypes
from pathlib import Path
from typing import Any, Awaitable, Callable

import httpx

from nanoclaw.channels._base import Adapter, Inbound, PlatformError
from nanoclaw.channels._media import MAX_MEDIA, TooLarge, container_path, download, human_size, inbox_folder, \
    safe_name

log = logging.getLogger("nanoclaw.channels")


async def fetch_media(adapter: Adapter, http: httpx.AsyncClient, credentials: dict[str, Any], msg: Inbound,
                      group_dir: Path | None, now: float, offload,
                      tell: Callable[[str, str], Awaitable[Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Download a message's files; returns the attachments saved and notes on the ones that were
    not (for the stored text). `tell(chat_jid, text)` says in the chat why a file was refused."""
    files: list[dict[str, Any]] = []
    notes: list[str] = []
    for media in msg.media:
        name = safe_name(media.name, media.mime_type, media.kind)
        if group_dir is None:
            notes.append(f"[{media.kind} {name} not saved: this chat belongs to no group]")
            continue
        try:
            where = await adapter.media_source(http, credentials, media)
            path, size = await download(http, where, adapter.name, inbox_folder(group_dir, now), name, offload)
        except TooLarge:
            notes.append(f"[{media.kind} {name} not saved: larger than the {human_size(MAX_MEDIA)} limit]")
            try:
                await tell(msg.chat_jid, f"{name} was not received: files larger than {human_size(MAX_MEDIA)} "
                                         "are not accepted.")
            except Exception as exc:  # the note is a courtesy; the stored message says it anyway
                log.warning("could not tell %s about a refused file: %s", msg.chat_jid, exc)
            continue
        except PlatformError as exc:
            log.warning("%s file in %s not downloaded: %s", adapter.name, msg.chat_jid, exc.reason)
            notes.append(f"[{media.kind} {name} could not be downloaded: {exc.reason}]")
            continue
        mime = media.mime_type or where.mime_type or mimetypes.guess_type(path.name)[0]
        files.append({"kind": media.kind, "name": path.name, "mimeType": mime, "size": size,
                      "path": container_path(group_dir, path)})
    return files, notes
