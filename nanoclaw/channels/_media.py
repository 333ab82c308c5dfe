"""Files in and out of chats: downloading a platform's media into a group's media folder
(host-owned, mounted read-only into the container) with a size cap.

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

from nanoclaw import safefs
from nanoclaw.groupfiles import CONTAINER_MEDIA, MAX_MEDIA

PARTIAL_PREFIX, PARTIAL_SUFFIX = ".download-", ".part"
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


def container_path(relative: str) -> str:
    """Where the container sees a file of its group's media folder."""
    return str(CONTAINER_MEDIA / relative)


async def download(http: httpx.AsyncClient, where: Download, platform: str, media_dir: Path,
                   folder: tuple[str, ...], name: str, offload, *, limit: int = MAX_MEDIA) -> tuple[str, int]:
    """Stream a file into media_dir/folder.../name (made unique) counting bytes as they come;
    never trusts a declared size. Returns the file name it got (made unique) and the size.
    TooLarge past `limit`; PlatformError when the platform fails; safefs.UnsafeEntry when a
    folder on the way is a link or a file. Either way nothing is left behind: the bytes go to a
    hidden temporary renamed only when complete."""
    from nanoclaw.channels._base import PlatformError, network_error  # _base imports this module
    tmp = await offload(_open_temporary, media_dir, folder)
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
                    await offload(_write_all, tmp.fd, bytes(buffer))
                    buffer.clear()
            if buffer:
                await offload(_write_all, tmp.fd, bytes(buffer))
        final = await offload(_publish, tmp, name)
        done = True
        return final, size
    except httpx.HTTPError as exc:
        raise network_error(platform, exc, *where.secrets) from None
    finally:
        with trio.CancelScope(shield=True):  # even when cancelled: nothing half-written stays
            await offload(_close, tmp, not done)


@dataclasses.dataclass
class _Temporary:
    dir_fd: int  # the no-follow fd of the folder it is in
    name: str
    fd: int


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _open_temporary(media_dir: Path, folder: tuple[str, ...]) -> _Temporary:
    dir_fd = safefs.open_dir(media_dir, folder)
    try:
        name = f"{PARTIAL_PREFIX}{secrets.token_hex(6)}{PARTIAL_SUFFIX}"
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=dir_fd)
    except BaseException:
        os.close(dir_fd)
        raise
    return _Temporary(dir_fd, name, fd)


def _close(tmp: _Temporary, discard: bool) -> None:
    try:
        os.close(tmp.fd)
        if discard:
            safefs.remove(tmp.dir_fd, tmp.name)
    finally:
        os.close(tmp.dir_fd)


def _publish(tmp: _Temporary, name: str) -> str:
    """Give the complete temporary its final name without replacing any file there."""
    os.fsync(tmp.fd)
    stem, ext = os.path.splitext(name)
    for n in range(1, 1000):
        target = name if n == 1 else f"{stem}-{n}{ext}"
        try:  # fails if the name is taken: never overwrites
            os.link(tmp.name, target, src_dir_fd=tmp.dir_fd, dst_dir_fd=tmp.dir_fd, follow_symlinks=False)
        except FileExistsError:
            continue
        os.unlink(tmp.name, dir_fd=tmp.dir_fd)
        return target
    raise OSError(f"no free name for {name}")


def remove_partial_downloads(media_dir: Path) -> list[str]:
    """Remove the temporaries of downloads a killed server left in media/<group>/<day>/. Only
    while no download runs (at start-up). Walked through no-follow fds: a link is never crossed."""
    removed: list[str] = []
    for group in _subfolders(media_dir, ()):
        for day in _subfolders(media_dir, (group,)):
            try:
                fd = safefs.open_dir(media_dir, (group, day), create=False)
            except OSError:
                continue
            try:
                removed += [f"{group}/{day}/{name}" for name in safefs.remove_matching(fd, _is_partial)]
            finally:
                os.close(fd)
    return removed


def _subfolders(root: Path, parts: tuple[str, ...]) -> list[str]:
    try:
        fd = safefs.open_dir(root, parts, create=False)
    except OSError:
        return []
    try:
        return safefs.subfolders(fd)
    finally:
        os.close(fd)


def _is_partial(name: str) -> bool:
    return name.startswith(PARTIAL_PREFIX) and name.endswith(PARTIAL_SUFFIX)


def day_folder(now: float) -> str:
    return dt.datetime.fromtimestamp(now, dt.timezone.utc).strftime("%Y-%m-%d")
