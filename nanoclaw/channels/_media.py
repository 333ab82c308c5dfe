"""Files in and out of chats: downloading a platform's media into a group's inbox with a
size cap, and reading a file a container asks to send without following links.

Everything here that touches the disk blocks; it runs through an offload
(trio.to_thread.run_sync by default).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import mimetypes
import os
import re
import secrets
from pathlib import Path, PurePosixPath

import httpx
import trio

from nanoclaw.groupfiles import CONTAINER_GROUP, MAX_MEDIA


INBOX = "inbox"
# Chunks of a download are gathered to about this size before each write.
WRITE_CHUNK = 1024 * 1024


@dataclasses.dataclass
class MediaRef:
    """A file attached to an inbound message, not yet downloaded.

    ref: what the adapter needs to fetch it (a Telegram file_id, a URL, a WhatsApp media id).
    """

    kind: str  # image | document | audio | voice | video
    ref: str
    name: str | None = None
    mime_type: str | None = None


@dataclasses.dataclass
class Download:
    """Where an adapter says a file can be fetched: a GET of url with headers.
    secrets: strings to scrub from error messages (a token in the URL)."""

    url: str
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    secrets: tuple[str, ...] = ()
    mime_type: str | None = None


class TooLarge(Exception):
    pass


def media_kind(mime_type: str | None) -> str:
    """image / audio / video / document from a MIME type."""
    major = (mime_type or "").partition("/")[0]
    return major if major in ("image", "audio", "video") else "document"


def human_size(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MiB" if size >= 1024 * 1024 else f"{size / 1024:.0f} KiB"


_UNSAFE = re.compile(r"[^A-Za-z0-9._+\- ]+")


def safe_name(name: str | None, mime_type: str | None, kind: str) -> str:
    """A file name without path separators, control characters or a leading dot."""
    base = PurePosixPath((name or "").replace("\\", "/")).name
    base = _UNSAFE.sub("_", base).strip(" ._")[:100]
    stem, ext = os.path.splitext(base)
    if not ext and mime_type:
        ext = mimetypes.guess_extension(mime_type.split(";")[0].strip()) or ""
    stem = stem.strip(" ._") or kind
    return f"{stem}{ext}"


def container_path(group_dir: Path, host_path: Path) -> str:
    return str(CONTAINER_GROUP / host_path.relative_to(group_dir).as_posix())


async def download(http: httpx.AsyncClient, where: Download, platform: str, folder: Path, name: str,
                   offload, *, limit: int = MAX_MEDIA) -> tuple[Path, int]:
    """Stream a file into folder/name (made unique) counting bytes as they come; never trusts
    a declared size. TooLarge past `limit`; PlatformError when the platform fails. Either way
    nothing is left behind: the bytes go to a hidden temporary renamed only when complete."""
    from nanoclaw.channels._base import PlatformError, network_error  # _base imports this module
    tmp = await offload(_open_temporary, folder)
    fd = tmp[1]
    size = 0
    done = False
    try:
        # httpx drops the Authorization header when a redirect leaves the host.
        async with http.stream("GET", where.url, headers=where.headers, follow_redirects=True) as response:
            if not response.is_success:
                raise PlatformError(f"{platform} answered the file download with {response.status_code} "
                                    f"{response.reason_phrase}", status=response.status_code)
            buffer = bytearray()
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > limit:
                    raise TooLarge()
                buffer += chunk
                if len(buffer) >= WRITE_CHUNK:
                    await offload(_write_all, fd, bytes(buffer))
                    buffer.clear()
            if buffer:
                await offload(_write_all, fd, bytes(buffer))
        final = await offload(_publish, tmp, folder, name)
        done = True
        return final, size
    except httpx.HTTPError as exc:
        raise network_error(platform, exc, *where.secrets) from None
    finally:
        if not done:
            with trio.CancelScope(shield=True):  # even when cancelled: nothing half-written stays
                await offload(_discard, tmp)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _open_temporary(folder: Path) -> tuple[Path, int]:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f".download-{secrets.token_hex(6)}.part"
    return path, os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)


def _discard(tmp: tuple[Path, int]) -> None:
    try:
        os.close(tmp[1])
    except OSError:
        pass
    tmp[0].unlink(missing_ok=True)


def _publish(tmp: tuple[Path, int], folder: Path, name: str) -> Path:
    """Give the complete temporary its final name without replacing any file there."""
    path, fd = tmp
    os.fsync(fd)
    os.close(fd)
    stem, ext = os.path.splitext(name)
    for n in range(1, 1000):
        target = folder / (name if n == 1 else f"{stem}-{n}{ext}")
        try:
            os.link(path, target)  # fails if the name is taken: never overwrites
        except FileExistsError:
            continue
        path.unlink()
        return target
    raise OSError(f"no free name for {name} in {folder}")


def remove_partial_downloads(groups_dir: Path) -> list[Path]:
    """Remove the temporaries of downloads a killed server left in any inbox. Only while no
    download runs (at start-up)."""
    removed = []
    for path in groups_dir.glob(f"*/{INBOX}/*/.download-*.part"):
        if path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def inbox_folder(group_dir: Path, now: float) -> Path:
    return group_dir / INBOX / dt.datetime.fromtimestamp(now, dt.timezone.utc).strftime("%Y-%m-%d")

