"""File access that never follows a link a container may have planted. Blocking: run in a thread.

Folders are opened one component at a time as directory fds with O_NOFOLLOW, files
relative to them (`dir_fd=`), so a symlink anywhere below the trusted root is never
crossed: nothing outside the data dir is read, written, moved or deleted, on this or
any other file system. The root itself (a data dir the operator chose) may be a link.
"""
from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
import stat
from pathlib import Path
from typing import Callable, Iterable

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a FIFO planted under a file's name must not hang the reader.
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


# What write_atomic_at names its temporary: .<name>.<12 hex>.tmp
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.[0-9a-f]{12}\.tmp$")


class UnsafeEntry(OSError):
    """A path component is a link, or an entry is not the kind of file expected."""


def _open_child(parent: int, name: str, *, create: bool, repair: bool, violations: list[str] | None) -> int:
    try:
        return os.open(name, DIR_FLAGS, dir_fd=parent)
    except FileNotFoundError:
        if not create:
            raise
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        kind = describe(parent, name)
        if not repair:
            raise UnsafeEntry(errno.ELOOP if kind == "a symbolic link" else errno.ENOTDIR,
                              f"{name} is {kind}, not a folder") from None
        remove(parent, name)
        if violations is not None:
            violations.append(f"{name} was {kind}; removed and made a folder again")
    try:
        os.mkdir(name, 0o755, dir_fd=parent)
    except FileExistsError:
        return os.open(name, DIR_FLAGS, dir_fd=parent)
    child = os.open(name, DIR_FLAGS, dir_fd=parent)
    _inherit_owner(parent, child)
    return child


def _inherit_owner(parent: int, child: int) -> None:
    """A folder made by root below a folder owned by someone else (the container's user) gets that
    owner, so a folder made again stays usable by the container."""
    owner = os.fstat(parent)
    if os.geteuid() == 0 and (owner.st_uid, owner.st_gid) != (0, 0):
        os.fchown(child, owner.st_uid, owner.st_gid)


def open_dir(root: Path, parts: Iterable[str] = (), *, create: bool = True, repair: bool = False,
             violations: list[str] | None = None) -> int:
    """An fd of root/parts... where no part may be a link; the caller closes it.

    create: make missing folders. repair: a part that is a link or a file is removed
    (the link itself, never its target) and made a folder, and a line is added to violations;
    without repair it raises UnsafeEntry.
    """
    if create:
        root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for name in parts:
            child = _open_child(fd, name, create=create, repair=repair, violations=violations)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def describe(dir_fd: int, name: str) -> str:
    """'a symbolic link', 'a folder', ... of the entry itself (never followed)."""
    try:
        mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
    except OSError:
        return "missing"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISREG(mode):
        return "a file"
    return "a special file"


def subfolders(dir_fd: int) -> list[str]:
    """The names of the real folders (never links) in dir_fd."""
    with os.scandir(dir_fd) as entries:
        return [e.name for e in entries if e.is_dir(follow_symlinks=False)]


def remove_matching(dir_fd: int, matches: Callable[[str], bool]) -> list[str]:
    """Remove the regular files (never links or folders) of dir_fd whose name matches; their names."""
    with os.scandir(dir_fd) as entries:
        names = [e.name for e in entries if matches(e.name) and e.is_file(follow_symlinks=False)]
    for name in names:
        remove(dir_fd, name)
    return names


def remove(dir_fd: int, name: str) -> None:
    """Remove the entry itself (a link, never its target; a folder with all inside it)."""
    try:
        if stat.S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
            shutil.rmtree(name, dir_fd=dir_fd)  # fd-based: does not follow links inside
        else:
            os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass


def read_regular(dir_fd: int, name: str, cap: int) -> bytes:
    """The bytes of a regular file (never through a link); at most cap, else UnsafeEntry."""
    try:
        fd = os.open(name, FILE_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeEntry(errno.ELOOP, f"{name} is a symbolic link") from None
        raise
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise UnsafeEntry(errno.EINVAL, f"{name} is {'a folder' if stat.S_ISDIR(mode) else 'not a regular file'}")
        chunks, total = [], 0
        while total <= cap:  # never trust st_size: the file may grow while we read
            chunk = os.read(fd, min(65536, cap + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > cap:
            raise UnsafeEntry(errno.EFBIG, f"{name} is larger than {cap} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)


def write_atomic_at(dir_fd: int, name: str, data: bytes, *, mode: int = 0o644, durable: bool = True,
                    sync_folder: bool = True) -> None:
    """Replace dir_fd/name with data atomically; an entry there (even a link or folder) is replaced,
    never written through. durable: fsync the file before the rename (even a power loss then never
    leaves a torn file) and, with sync_folder, the folder after it (the rename itself survives a
    power loss; without it an OS crash may bring back the previous file)."""
    tmp = f".{name}.{secrets.token_hex(6)}.tmp"  # what is_temporary_of recognises
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dir_fd)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno not in (errno.EISDIR, errno.ENOTDIR, errno.ENOTEMPTY, errno.EEXIST):
                raise
            remove(dir_fd, name)  # a folder planted under the name
            os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except OSError:
            pass
        raise
    if durable and sync_folder:
        os.fsync(dir_fd)


def is_temporary_of(name: str, entry: str) -> bool:
    """Whether entry is a temporary write_atomic_at(.., name, ..) left when the process was killed."""
    found = _TEMPORARY.match(entry)
    return bool(found and found["name"] == name)


def tree_bytes(path: Path) -> int:
    """Bytes held by the regular files under path; links are counted as links, never followed."""
    total = 0
    try:
        walker = os.fwalk(path, follow_symlinks=False)
        for _, _, files, dir_fd in walker:
            for name in files:
                try:
                    info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISREG(info.st_mode):
                    total += max(info.st_size, info.st_blocks * 512)
    except OSError:
        pass
    return total


__all__ = ["UnsafeEntry", "describe", "is_temporary_of", "open_dir", "read_regular", "remove", "remove_matching",
           "subfolders", "tree_bytes", "write_atomic_at"]
