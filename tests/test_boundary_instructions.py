"""Issue 11 item 2: CLAUDE.md is read and written only as a regular file in the group folder."""
from __future__ import annotations

import os

import pytest

from boundary_support import audit_rows, make_canary, snapshot
from checks import assert_error

NS = "/container/namespaces"


@pytest.fixture
async def group(client, settings):
    assert (await client.post(NS, json={"name": "support"})).status_code == 201
    return settings.groups_dir / "support"


@pytest.fixture
def canary(tmp_path):
    return make_canary(tmp_path)


@pytest.mark.parametrize("name", ["support", "global"])
async def test_a_claude_md_link_to_a_host_file_is_refused_and_audited(client, server, group, canary, name):
    folder = server.settings.groups_dir / name
    folder.mkdir(exist_ok=True)
    before = snapshot(canary)
    (folder / "CLAUDE.md").symlink_to(canary / "secret.txt")
    answer = await client.get(f"{NS}/{name}/instructions")
    error = assert_error(answer, 409, "INSTRUCTIONS_LINK")
    assert "symbolic link" in error["message"] and "secret" not in answer.text
    answer = await client.post(f"{NS}/merge-instructions", json={"groupName": "support"})
    assert_error(answer, 409, "INSTRUCTIONS_LINK")
    assert "secret" not in answer.text
    answer = await client.put(f"{NS}/{name}/instructions", json={"instructions": "overwrite"})
    assert_error(answer, 409, "INSTRUCTIONS_LINK")
    assert snapshot(canary) == before
    assert (folder / "CLAUDE.md").is_symlink()
    rows = await audit_rows(server.services, category="instructions")
    assert len(rows) == 3 and all(r[0] == "violation" and "not followed" in r[2] for r in rows)


async def test_a_group_folder_that_is_a_link_is_refused(client, server, canary):
    assert (await client.post(NS, json={"name": "moved"})).status_code == 201
    folder = server.settings.groups_dir / "moved"
    os.rmdir(folder)
    folder.symlink_to(canary)
    (canary / "CLAUDE.md").write_text("host file")
    before = snapshot(canary)
    answer = await client.get(f"{NS}/moved/instructions")
    assert_error(answer, 409, "INSTRUCTIONS_LINK")
    assert "host file" not in answer.text
    assert_error(await client.put(f"{NS}/moved/instructions", json={"instructions": "x"}), 409, "INSTRUCTIONS_LINK")
    assert snapshot(canary) == before


async def test_a_claude_md_folder_is_a_clear_error(client, group):
    (group / "CLAUDE.md").mkdir()
    error = assert_error(await client.get(f"{NS}/support/instructions"), 409, "INSTRUCTIONS_NOT_A_FILE")
    assert "is a folder" in error["message"]
    assert_error(await client.put(f"{NS}/support/instructions", json={"instructions": "x"}), 409,
                 "INSTRUCTIONS_NOT_A_FILE")
    assert (group / "CLAUDE.md").is_dir()


async def test_a_refused_write_is_not_audited_as_an_update_and_the_next_one_is(client, server, group):
    # The file and its audit entry share one store write: a refused file writes no entry and
    # leaves the store free for the next write.
    (group / "CLAUDE.md").mkdir()
    assert_error(await client.put(f"{NS}/support/instructions", json={"instructions": "x"}), 409,
                 "INSTRUCTIONS_NOT_A_FILE")
    updated = ("info", "support", "instructions of support updated")
    assert updated not in await audit_rows(server.services, category="config")
    os.rmdir(group / "CLAUDE.md")
    assert (await client.put(f"{NS}/support/instructions", json={"instructions": "fine"})).status_code == 200
    assert (group / "CLAUDE.md").read_text() == "fine"
    assert (await audit_rows(server.services, category="config")).count(updated) == 1


async def test_a_claude_md_link_to_a_folder_is_refused(client, group, canary):
    (group / "CLAUDE.md").symlink_to(canary)
    assert_error(await client.get(f"{NS}/support/instructions"), 409, "INSTRUCTIONS_LINK")


async def test_binary_claude_md_is_a_clear_error(client, group):
    (group / "CLAUDE.md").write_bytes(b"\xff\xfe\x00binary\x80")
    error = assert_error(await client.get(f"{NS}/support/instructions"), 409, "INSTRUCTIONS_NOT_TEXT")
    assert "not UTF-8" in error["message"]
    # Writing replaces it with text again.
    assert (await client.put(f"{NS}/support/instructions", json={"instructions": "ok"})).status_code == 200
    assert (await client.get(f"{NS}/support/instructions")).json()["instructions"] == "ok"


async def test_a_fifo_claude_md_does_not_hang(client, group):
    os.mkfifo(group / "CLAUDE.md")
    assert_error(await client.get(f"{NS}/support/instructions"), 409, "INSTRUCTIONS_NOT_A_FILE")


async def test_an_oversized_claude_md_is_refused(client, group):
    (group / "CLAUDE.md").write_bytes(b"a" * (2 * 1024 * 1024 + 1))
    assert_error(await client.get(f"{NS}/support/instructions"), 409, "INSTRUCTIONS_NOT_A_FILE")


async def test_a_group_folder_that_is_a_file_is_a_clear_error(client, server):
    assert (await client.post(NS, json={"name": "flat"})).status_code == 201
    folder = server.settings.groups_dir / "flat"
    os.rmdir(folder)
    folder.write_text("not a folder")
    error = assert_error(await client.get(f"{NS}/flat/instructions"), 409, "INSTRUCTIONS_NOT_A_FILE")
    assert "is a file, not a folder" in error["message"]
