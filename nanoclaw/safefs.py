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


# A measured tree with more entries, or folders nested deeper, is refused rather than walked on.
MAX_TREE_ENTRIES = 200_000
MAX_TREE_DEPTH = 128


class TreeTooLarge(OSError):
    """A tree past MAX_TREE_ENTRIES entries or MAX_TREE_DEPTH levels; counted: the bytes seen so far."""

    def __init__(self, message: str, counted: int) -> None:
        super().__init__(errno.EFBIG, message)
        self.counted = counted


def tree_bytes(root: Path, parts: Iterable[str] = (), *, max_entries: int = MAX_TREE_ENTRIES,
               max_depth: int = MAX_TREE_DEPTH) -> int:
    """Bytes held under root/parts...: every entry's allocated blocks, a regular file at least its
    size; a link counts as itself, never followed. 0 when the folder is missing (or not a folder).
    Past max_entries entries or max_depth levels, TreeTooLarge: a hostile tree cannot hold the
    thread for long, and at most max_depth + 1 folders are open at a time."""
    try:
        top = open_dir(root, parts, create=False)
    except (FileNotFoundError, NotADirectoryError, UnsafeEntry):
        return 0
    total = entries = 0
    stack: list[tuple[int, list[str]]] = []

    def scan(fd: int) -> None:
        nonlocal total, entries
        folders = []
        try:
            with os.scandir(fd) as listing:
                for entry in listing:
                    entries += 1
                    if entries > max_entries:
                        raise TreeTooLarge(f"more than {max_entries} files and folders", total)
                    try:
                        info = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    total += max(info.st_size if stat.S_ISREG(info.st_mode) else 0, info.st_blocks * 512)
                    if stat.S_ISDIR(info.st_mode):
                        folders.append(entry.name)
        except BaseException:
            os.close(fd)
            raise
        if folders and len(stack) >= max_depth:
            os.close(fd)
            raise TreeTooLarge(f"folders nested more than {max_depth} deep", total)
        stack.append((fd, folders))

    try:
        scan(top)
        while stack:
            fd, folders = stack[-1]
            if not folders:
                os.close(fd)
                stack.pop()
                continue
            try:
                child = os.open(folders.pop(), DIR_FLAGS, dir_fd=fd)
            except OSError:  # gone meanwhile, or swapped for a link: not walked
                continue
            scan(child)
    finally:
        for fd, _ in stack:
            os.close(fd)
    return total


__all__ = ["MAX_TREE_DEPTH", "MAX_TREE_ENTRIES", "TreeTooLarge", "UnsafeEntry", "describe", "is_temporary_of",
           "open_dir", "read_regular", "remove", "remove_matching", "subfolders", "tree_bytes", "write_atomic_at"]
