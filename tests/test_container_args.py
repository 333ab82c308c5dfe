"""Who a container runs as and the flags that confine it, without an engine (issue 11, item 3).

The non-root server path is exercised here through the argument list; the Docker tests
(test_container_boundary_docker.py) run the root path for real.
"""
from __future__ import annotations

import os

import pytest

from nanoclaw.runtime import container_user, give_to_container, hardening_args
from nanoclaw.runtime._args import AGENT_HOME, AGENT_UID, PIDS_LIMIT


def pairs(args: list[str]) -> list[tuple[str, str]]:
    return [(flag, value) for flag, value in zip(args, args[1:]) if flag.startswith("--") or flag == "-e"]


def test_a_non_root_server_maps_the_container_user_to_its_own_uid():
    assert container_user(as_root=False) == (os.getuid(), os.getgid())
    assert container_user(as_root=True) == (AGENT_UID, AGENT_UID)
    args = hardening_args(512, 1.5, (4321, 8765))
    flags = pairs(args)
    assert ("--user", "4321:8765") in flags
    assert ("--cap-drop", "ALL") in flags
    assert ("--security-opt", "no-new-privileges") in flags
    assert "--read-only" in args
    assert ("--memory", "512m") in flags and ("--memory-swap", "512m") in flags
    assert ("--pids-limit", str(PIDS_LIMIT)) in flags and ("--cpus", "1.5") in flags
    tmpfs = [value for flag, value in flags if flag == "--tmpfs"]
    assert [t.split(":")[0] for t in tmpfs] == ["/tmp", AGENT_HOME]
    assert all("nosuid" in t and "nodev" in t and "size=" in t for t in tmpfs)
    # $HOME belongs to whoever the container runs as, so it is writable for a mapped uid too.
    assert "uid=4321,gid=8765" in tmpfs[1]
    assert ("-e", f"HOME={AGENT_HOME}") in flags


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a folder's owner needs root")
def test_a_root_server_hands_over_only_real_folders_never_through_a_link(tmp_path):
    folder, outside = tmp_path / "group", tmp_path / "host-secret"
    folder.mkdir()
    outside.mkdir()
    (folder / "inside.txt").write_text("not touched: only the mount point itself changes owner")
    link = tmp_path / "messages"
    link.symlink_to(outside)
    planted_file = tmp_path / "tasks"
    planted_file.write_text("a file where a folder should be")

    refused = give_to_container([folder, link, planted_file, tmp_path / "missing"], (AGENT_UID, AGENT_UID))

    assert refused == [link, planted_file, tmp_path / "missing"]
    assert (os.stat(folder).st_uid, os.stat(folder).st_gid) == (AGENT_UID, AGENT_UID)
    assert os.stat(folder / "inside.txt").st_uid == 0
    assert os.stat(outside).st_uid == 0 and os.lstat(link).st_uid == 0
    assert os.stat(planted_file).st_uid == 0
