"""Group and global instructions, and merge-instructions (issue 2, item 8)."""
from __future__ import annotations

import pytest
import trio

from checks import assert_error, error_fields

NS = "/container/namespaces"
MERGE = f"{NS}/merge-instructions"


@pytest.fixture
async def group(client):
    assert (await client.post(NS, json={"name": "support"})).status_code == 201
    return "support"


async def put(client, name: str, text: str):
    answer = await client.put(f"{NS}/{name}/instructions", json={"instructions": text})
    assert answer.status_code == 200, answer.text
    return answer.json()


async def merged(client, group_name: str) -> str:
    answer = await client.post(MERGE, json={"groupName": group_name})
    assert answer.status_code == 200, answer.text
    return answer.json()["merged"]


# -- group instructions -------------------------------------------------------

async def test_group_instructions_are_empty_at_first(client, group):
    answer = await client.get(f"{NS}/{group}/instructions")
    assert answer.status_code == 200
    assert answer.json()["instructions"] == ""


async def test_put_group_instructions_then_get_them_back(client, group):
    assert (await put(client, group, "You are a support agent."))["instructions"] == "You are a support agent."
    assert (await client.get(f"{NS}/{group}/instructions")).json()["instructions"] == "You are a support agent."


async def test_group_instructions_are_the_claude_md_of_the_group_folder(client, group, settings):
    text = "Line one\n\nÜnïcödé ✓ and \"quotes\"\n"
    await put(client, group, text)
    assert (settings.data_dir / "groups" / group / "CLAUDE.md").read_bytes() == text.encode("utf-8")


async def test_an_edit_of_claude_md_on_disk_is_what_get_returns(client, group, settings):
    (settings.data_dir / "groups" / group / "CLAUDE.md").write_text("edited by hand")
    assert (await client.get(f"{NS}/{group}/instructions")).json()["instructions"] == "edited by hand"


async def test_put_replaces_the_whole_file(client, group, settings):
    await put(client, group, "a long first version " * 100)
    await put(client, group, "short")
    assert (settings.data_dir / "groups" / group / "CLAUDE.md").read_text() == "short"


async def test_instructions_are_written_atomically(client, group, settings):
    # A reader holding the old file keeps seeing all of the old text: the new text
    # goes to a fresh file that is renamed over the old one, never written in place.
    path = settings.data_dir / "groups" / group / "CLAUDE.md"
    await put(client, group, "old text " * 1000)
    with open(path, "rb") as reader:
        await put(client, group, "new text")
        assert reader.read() == b"old text " * 1000
    assert path.read_text() == "new text"
    assert sorted(p.name for p in path.parent.iterdir()) == ["CLAUDE.md"]


async def test_concurrent_puts_all_answer_and_leave_one_whole_version_and_an_entry_each(client, group, settings):
    # Queued PUTs of one file go in one batch (group commit): one file write, every caller answered.
    assert (await client.post(NS, json={"name": "sales"})).status_code == 201
    texts = {name: [f"{name} version {i} " * 50 for i in range(12)] for name in (group, "sales")}
    async with trio.open_nursery() as nursery:
        for name, versions in texts.items():
            for text in versions:
                nursery.start_soon(put, client, name, text)
    for name, versions in texts.items():
        folder = settings.data_dir / "groups" / name
        assert (folder / "CLAUDE.md").read_text() in versions
        assert sorted(p.name for p in folder.iterdir()) == ["CLAUDE.md"]
        assert (await client.get(f"{NS}/{name}/instructions")).json()["instructions"] == \
            (folder / "CLAUDE.md").read_text()
        entries = (await client.get("/container/audit-log", params={"group": name, "limit": 100})).json()["entries"]
        assert len([e for e in entries if e["message"] == f"instructions of {name} updated"]) == len(versions)


async def test_instructions_of_an_unknown_group_are_a_404(client):
    assert_error(await client.get(f"{NS}/ghost/instructions"), 404, "NOT_FOUND")
    assert_error(await client.put(f"{NS}/ghost/instructions", json={"instructions": "x"}), 404, "NOT_FOUND")


async def test_put_instructions_for_an_unknown_group_creates_no_folder(client, settings):
    await client.put(f"{NS}/ghost/instructions", json={"instructions": "x"})
    assert not (settings.data_dir / "groups" / "ghost").exists()


async def test_put_instructions_without_the_field_is_a_400(client, group):
    error = assert_error(await client.put(f"{NS}/{group}/instructions", json={"text": "x"}), 400)
    assert error_fields(error) == {"instructions", "text"}


async def test_instructions_over_the_size_limit_are_a_400(client, group, settings):
    error = assert_error(await client.put(f"{NS}/{group}/instructions",
                                          json={"instructions": "x" * (512 * 1024 + 1)}), 400)
    assert error_fields(error) == {"instructions"}
    assert not (settings.data_dir / "groups" / group / "CLAUDE.md").exists()


async def test_changing_instructions_is_audited_as_info(client, group):
    await put(client, group, "secret plan")
    entries = (await client.get("/container/audit-log", params={"group": group})).json()["entries"]
    assert entries[0]["severity"] == "info"
    assert "instructions" in entries[0]["message"]


# -- global instructions ------------------------------------------------------

async def test_global_instructions_are_empty_at_first(client):
    answer = await client.get(f"{NS}/global/instructions")
    assert answer.status_code == 200
    assert answer.json()["instructions"] == ""


async def test_global_instructions_need_no_namespace(client, settings):
    await put(client, "global", "Always answer in English.")
    assert (await client.get(f"{NS}/global/instructions")).json()["instructions"] == "Always answer in English."
    assert (settings.data_dir / "groups" / "global" / "CLAUDE.md").read_text() == "Always answer in English."
    assert (await client.get(NS)).json()["namespaces"] == []


async def test_global_and_group_instructions_are_separate_files(client, group, settings):
    await put(client, "global", "global text")
    await put(client, group, "group text")
    assert (await client.get(f"{NS}/global/instructions")).json()["instructions"] == "global text"
    assert (await client.get(f"{NS}/{group}/instructions")).json()["instructions"] == "group text"
    assert (settings.data_dir / "groups" / "global" / "CLAUDE.md").read_text() == "global text"
    assert (settings.data_dir / "groups" / group / "CLAUDE.md").read_text() == "group text"


async def test_a_namespace_whose_name_starts_with_global_is_an_ordinary_group(client, settings):
    assert (await client.post(NS, json={"name": "global-team"})).status_code == 201
    await put(client, "global-team", "team text")
    assert (await client.get(f"{NS}/global/instructions")).json()["instructions"] == ""
    assert (settings.data_dir / "groups" / "global-team" / "CLAUDE.md").read_text() == "team text"


# -- merge-instructions ---------------------------------------------------------

async def test_merge_has_the_exact_documented_format(client, group):
    await put(client, "global", "Always respond in the same language.")
    await put(client, group, "You are a support agent.")
    assert await merged(client, group) == (
        "# Global Instructions\nAlways respond in the same language.\n\n"
        "# Group Instructions\nYou are a support agent."
    )


async def test_merge_leaves_out_an_empty_global_section(client, group):
    await put(client, group, "You are a support agent.")
    assert await merged(client, group) == "# Group Instructions\nYou are a support agent."


async def test_merge_leaves_out_an_empty_group_section(client, group):
    await put(client, "global", "Be kind.")
    assert await merged(client, group) == "# Global Instructions\nBe kind."


async def test_merge_treats_whitespace_only_instructions_as_empty(client, group):
    await put(client, "global", "  \n\n ")
    await put(client, group, "Only this.")
    assert await merged(client, group) == "# Group Instructions\nOnly this."


async def test_merge_of_two_empty_sections_is_empty(client, group):
    assert await merged(client, group) == ""


async def test_merge_of_an_unknown_group_is_a_404(client):
    assert_error(await client.post(MERGE, json={"groupName": "ghost"}), 404, "NOT_FOUND")


async def test_merge_of_global_is_a_400_not_global_twice(client):
    await put(client, "global", "once")
    error = assert_error(await client.post(MERGE, json={"groupName": "global"}), 400)
    assert "global" in error["message"]


async def test_merge_without_group_name_is_a_400(client):
    error = assert_error(await client.post(MERGE, json={}), 400, "VALIDATION_ERROR")
    assert error_fields(error) == {"groupName"}


async def test_merge_is_not_mistaken_for_a_namespace_called_merge_instructions(client):
    assert (await client.post(NS, json={"name": "merge-instructions"})).status_code == 201
    await put(client, "merge-instructions", "odd but allowed")
    assert await merged(client, "merge-instructions") == "# Group Instructions\nodd but allowed"
    assert (await client.get(f"{NS}/merge-instructions")).json()["name"] == "merge-instructions"
