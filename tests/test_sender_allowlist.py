"""Sender allowlist through HTTP, and the function channels call (issue 2, item 10)."""
from __future__ import annotations

from checks import assert_error, error_fields

PATH = "/channels/sender-allowlist"
ALICE_AND_BOB = {
    "enabled": True,
    "entries": [{"chatJid": "tg:123456789", "label": "Alice"}, {"chatJid": "slack:U01ABCDEF", "label": "Bob"}],
}


async def test_allowlist_is_disabled_and_empty_at_first(client):
    answer = await client.get(PATH)
    assert answer.status_code == 200
    assert answer.json() == {"enabled": False, "entries": []}


async def test_put_then_get_returns_the_spec_shape(client):
    answer = await client.put(PATH, json=ALICE_AND_BOB)
    assert answer.status_code == 200
    assert answer.json() == ALICE_AND_BOB
    assert (await client.get(PATH)).json() == ALICE_AND_BOB


async def test_put_replaces_the_whole_list(client):
    await client.put(PATH, json=ALICE_AND_BOB)
    await client.put(PATH, json={"enabled": False, "entries": [{"chatJid": "dc:42", "label": "Carol"}]})
    assert (await client.get(PATH)).json() == {"enabled": False, "entries": [{"chatJid": "dc:42", "label": "Carol"}]}


async def test_a_label_is_optional(client):
    answer = await client.put(PATH, json={"enabled": True, "entries": [{"chatJid": "tg:1"}]})
    assert answer.json()["entries"] == [{"chatJid": "tg:1", "label": ""}]


async def test_the_allowlist_is_persisted_in_the_store(client, server):
    await client.put(PATH, json=ALICE_AND_BOB)
    rows = await server.services.db.fetchall("SELECT value FROM settings")
    assert any("tg:123456789" in row[0] for row in rows)


async def test_an_entry_without_chat_jid_is_a_400_naming_it(client):
    error = assert_error(await client.put(PATH, json={"enabled": True, "entries": [{"label": "x"}]}), 400)
    assert error_fields(error) == {"entries.0.chatJid"}


async def test_a_misspelt_field_is_a_400_and_changes_nothing(client):
    await client.put(PATH, json=ALICE_AND_BOB)
    error = assert_error(await client.put(PATH, json={"enable": False, "entries": []}), 400, "VALIDATION_ERROR")
    assert "enable" in error_fields(error)
    assert (await client.get(PATH)).json() == ALICE_AND_BOB


async def test_wrong_types_are_a_400(client):
    assert_error(await client.put(PATH, json={"enabled": "sometimes", "entries": "tg:1"}), 400, "VALIDATION_ERROR")


async def test_changing_the_allowlist_is_audited_as_info(client):
    await client.put(PATH, json=ALICE_AND_BOB)
    entries = (await client.get("/container/audit-log")).json()["entries"]
    assert entries[0]["severity"] == "info"
    assert "sender allowlist" in entries[0]["message"]


# -- the function the channels call ------------------------------------------

async def test_every_sender_is_allowed_while_the_allowlist_is_disabled(client, server):
    await client.put(PATH, json={"enabled": False, "entries": [{"chatJid": "tg:1"}]})
    assert await server.services.senders.is_allowed("tg:999") is True


async def test_only_listed_senders_are_allowed_once_enabled(client, server):
    await client.put(PATH, json=ALICE_AND_BOB)
    assert await server.services.senders.is_allowed("tg:123456789") is True
    assert await server.services.senders.is_allowed("slack:U01ABCDEF") is True
    assert await server.services.senders.is_allowed("tg:999") is False


async def test_a_listed_chat_allows_every_sender_in_it(client, server):
    await client.put(PATH, json={"enabled": True, "entries": [{"chatJid": "tg:-100200", "label": "team"}]})
    assert await server.services.senders.is_allowed("tg:999", chat_jid="tg:-100200") is True
    assert await server.services.senders.is_allowed("tg:999", chat_jid="tg:-100300") is False


async def test_an_empty_enabled_allowlist_allows_nobody(client, server):
    await client.put(PATH, json={"enabled": True, "entries": []})
    assert await server.services.senders.is_allowed("tg:1") is False
