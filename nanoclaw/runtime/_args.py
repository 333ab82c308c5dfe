"""Least privilege for every agent container: who it runs as and the flags that confine it."""
from __future__ import annotations

import os
from pathlib import Path

# The image's fixed non-root user (nanoclaw/agent/Dockerfile).
AGENT_UID = AGENT_GID = 1000
AGENT_HOME = "/home/agent"
PIDS_LIMIT = 512
TMP_SIZE = "256m"
HOME_SIZE = "128m"


def running_as_root() -> bool:
    return os.geteuid() == 0


def container_user(*, as_root: bool | None = None) -> tuple[int, int]:
    """The uid/gid a container runs as. Under a root server the image's own non-root user,
    whose folders the server hands over (give_to_container); otherwise the server's own uid,
    which owns those folders already, so nothing in the container is more than the server."""
    if running_as_root() if as_root is None else as_root:
        return AGENT_UID, AGENT_GID
    return os.getuid(), os.getgid()


def hardening_args(memory_mb: int, cpus: float, user: tuple[int, int]) -> list[str]:
    """No capabilities, no privilege gain, a read-only root with small tmpfs for /tmp and $HOME,
    no swap beyond the memory limit, a pids limit."""
    uid, gid = user
    return [
        "--user", f"{uid}:{gid}",
        "--cap-drop", "ALL",
        "--security-opt", "no-new-privileges",
        "--read-only",
        "--tmpfs", f"/tmp:rw,nosuid,nodev,size={TMP_SIZE},mode=1777",
        "--tmpfs", f"{AGENT_HOME}:rw,nosuid,nodev,size={HOME_SIZE},uid={uid},gid={gid},mode=0700",
        "-e", f"HOME={AGENT_HOME}",
        "--pids-limit", str(PIDS_LIMIT),
        "--memory", f"{memory_mb}m",
        "--memory-swap", f"{memory_mb}m",
        "--cpus", f"{cpus:g}",
    ]


def give_to_container(folders: list[Path], user: tuple[int, int]) -> list[Path]:
    """Make each folder (the host-created mount points only, never what is inside them) owned by
    the container user. Opened with O_NOFOLLOW | O_DIRECTORY and changed through the fd, so a
    folder a container swapped for a link or a file is never followed: it is skipped and returned."""
    uid, gid = user
    refused = []
    for folder in folders:
        try:
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            refused.append(folder)
            continue
        try:
            st = os.fstat(fd)
            if (st.st_uid, st.st_gid) != (uid, gid):
                os.fchown(fd, uid, gid)
        finally:
            os.close(fd)
    return refused


def run_args(*, name: str, labels: dict[str, str], network: str, memory_mb: int, cpus: float,
             extra: list[str], mounts: list[tuple[Path, str, bool]], env: dict[str, str],
             image: str) -> tuple[list[str], list[Path]]:
    """The `run` arguments of one agent container, and the host paths left out because the
    engine's -v syntax cannot carry them (':' or ',' in the path)."""
    args = ["run", "-i", "--rm", "--pull", "never", "--name", name]
    for key, value in labels.items():
        args += ["--label", f"{key}={value}"]
    args += ["--network", network, *hardening_args(memory_mb, cpus, container_user()), *extra]
    skipped = []
    for host, target, read_only in mounts:
        if ":" in str(host) or "," in str(host):
            skipped.append(host)
            continue
        args += ["-v", f"{host}:{target}" + (":ro" if read_only else "")]
    for key, value in env.items():
        args += ["-e", f"{key}={value}"]
    args.append(image)
    return args, skipped
