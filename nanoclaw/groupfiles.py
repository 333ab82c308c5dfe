"""Files a container names by their container path (/workspace/group/... or /workspace/media/...):
read from inside the group's folder or its media folder only, never through a link
(nanoclaw.safefs). Blocking: run it in a thread."""
from __future__ import annotations

import dataclasses
import mimetypes
import os
from pathlib import Path, PurePosixPath
from typing import Any

from nanoclaw import safefs

# The largest file taken from or sent to a chat.
MAX_MEDIA = 20 * 1024 * 1024
CONTAINER_GROUP = PurePosixPath("/workspace/group")
# The group's chat media: host-owned, mounted read-only.
CONTAINER_MEDIA = PurePosixPath("/workspace/media")
IMAGE_TYPES = {"image/jpeg", "image/png", "image/gif", "image/webp"}


@dataclasses.dataclass
class OutFile:
    name: str
    data: bytes
    mime_type: str
    path: str = ""  # where the container has it

    @property
    def kind(self) -> str:
        return "image" if self.mime_type in IMAGE_TYPES else "document"


def read_group_file(group_dir: Path, media_dir: Path, requested: Any, *, limit: int = MAX_MEDIA) -> OutFile:
    """The file a container names by its container path, read from inside its group folder or
    its media folder only. Each path component is opened relative to the one before with
    O_NOFOLLOW (nanoclaw.safefs), so no link anywhere leads out. ValueError says why a request
    is refused. Blocking."""
    if not isinstance(requested, str) or not requested or "\x00" in requested:
        raise ValueError("send_file needs a path")
    path = PurePosixPath(requested)
    if not path.is_absolute():
        path = CONTAINER_GROUP / path
    area, folder = CONTAINER_GROUP, group_dir
    if path.is_relative_to(CONTAINER_MEDIA):
        area, folder = CONTAINER_MEDIA, media_dir
    try:
        parts = path.relative_to(area).parts
    except ValueError:
        raise ValueError(f"only files under {CONTAINER_GROUP} or {CONTAINER_MEDIA} can be sent, "
                         f"not {requested}") from None
    if not parts or any(p in ("..", ".") for p in parts):
        raise ValueError(f"{requested} does not name a file inside {area}")
    try:
        fd = safefs.open_dir(folder, parts[:-1], create=False)
    except OSError as exc:
        raise ValueError(f"{requested}: {exc.strerror or exc} (links are not followed)") from None
    try:
        data = safefs.read_regular(fd, parts[-1], limit)
    except safefs.UnsafeEntry as exc:
        raise ValueError(f"{requested}: {exc.strerror}") from None
    except OSError as exc:
        raise ValueError(f"{requested}: cannot open ({exc.strerror or exc})") from None
    finally:
        os.close(fd)
    name = parts[-1]
    mime = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return OutFile(name, data, mime, str(area.joinpath(*parts)))
