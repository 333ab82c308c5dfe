"""Inbound files: downloaded through the platform (the container never sees a token) into
the group's media/<group>/YYYY-MM-DD/ folder, at most MAX_MEDIA bytes each. That folder is
the host's: the container sees it read-only at /workspace/media, so nothing it does can
redirect a download (docs/security.md)."""
from __future__ import annotations

import logging
import mimetypes
from pathlib import Path
from typing import Any, Awaitable, Callable

import httpx

from nanoclaw.channels._base import Adapter, Inbound, PlatformError
from nanoclaw import safefs
from nanoclaw.channels._media import MAX_MEDIA, TooLarge, container_path, day_folder, download, human_size, \
    safe_name

log = logging.getLogger("nanoclaw.channels")


async def fetch_media(adapter: Adapter, http: httpx.AsyncClient, credentials: dict[str, Any], msg: Inbound,
                      media_dir: Path, group: str | None, now: float, offload,
                      tell: Callable[[str, str], Awaitable[Any]],
                      refused: Callable[[str], Awaitable[Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Download a message's files into media_dir/group/<day>/; returns the attachments saved and
    notes on the ones that were not (for the stored text). `tell(chat_jid, text)` says in the
    chat why a file was refused; `refused(reason)` audits a folder that is not a real folder."""
    files: list[dict[str, Any]] = []
    notes: list[str] = []
    for media in msg.media:
        name = safe_name(media.name, media.mime_type, media.kind)
        if group is None:
            notes.append(f"[{media.kind} {name} not saved: this chat belongs to no group]")
            continue
        try:
            where = await adapter.media_source(http, credentials, media)
            day = day_folder(now)
            saved, size = await download(http, where, adapter.name, media_dir, (group, day), name, offload)
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
        except safefs.UnsafeEntry as exc:
            await refused(f"a {media.kind} for {group} was not saved: {exc.strerror} (links are not followed)")
            notes.append(f"[{media.kind} {name} not saved: the media folder is not a real folder]")
            continue
        mime = media.mime_type or where.mime_type or mimetypes.guess_type(saved)[0]
        files.append({"kind": media.kind, "name": saved, "mimeType": mime, "size": size,
                      "path": container_path(f"{day}/{saved}")})
    return files, notes
