"""Private modes for what holds secrets and state: dirs 0700, the database files 0600."""
from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger("nanoclaw.filemodes")

DIR_MODE = 0o700
FILE_MODE = 0o600
DB_SUFFIXES = ("", "-wal", "-shm")


def private_dir(path: Path) -> None:
    """Create path (and missing parents) 0700; an existing dir keeps its mode."""
    path = Path(path)
    if path.is_dir():
        return
    if not path.parent.exists():
        private_dir(path.parent)
    try:
        path.mkdir(mode=DIR_MODE)
    except FileExistsError:
        return
    os.chmod(path, DIR_MODE)  # mkdir's mode is masked by the umask


def private_database(path: Path) -> None:
    """Create the SQLite file 0600 before SQLite does: its WAL and SHM files copy that mode."""
    private_dir(Path(path).parent)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
    except FileExistsError:
        pass


def too_open(data_dir: Path, config_dir: Path, database: Path) -> list[str]:
    """Warnings for existing dirs/files that group or others can reach."""
    found = []
    checks = [(data_dir, DIR_MODE), (config_dir, DIR_MODE)]
    checks += [(Path(f"{database}{suffix}"), FILE_MODE) for suffix in DB_SUFFIXES]
    for path, wanted in checks:
        try:
            mode = path.stat().st_mode & 0o777
        except FileNotFoundError:
            continue
        if mode & 0o077:
            found.append(f"{path} is mode {mode:04o}, more open than {wanted:04o}: "
                         f"others on this machine may read it (chmod {wanted:o} {path})")
    return found
