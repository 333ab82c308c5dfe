"""Group namespaces through HTTP (issue 2, item 7)."""
from __future__ import annotations

import datetime as dt

import pytest

from checks import assert_error, error_fields

NS = "/container/namespaces"


async def create(client, name: str, **fields):
    answer = await client.post(NS, json={"name": name, **fields})
    assert answer.status_code == 201, answer.text
    return answer.json()


def parse_time(text: str) -> dt.datetime:
    assert text.endswith("Z"), text
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


# -- create ---------------------------------------------------------------

async def test_create_answers_201_with_the_defaults(client):
    answer = await client.post(NS, json={"name": "telegram-support", "description": "Customer support"})
    assert answer.status_code == 201
    ns = answer.json()
    assert ns["name"] == "telegram-support"
    assert ns["description"] == "Customer support"
    assert ns["chatJids"] == []
    assert ns["trigger"] == "@Andy"
    assert ns["requiresTrigger"] is True
    assert ns["isMain"] is False
    assert set(ns["containerConfig"]) >= {"image", "timeoutSecs", "idleTimeoutSecs", "env", "additionalMounts"}
    assert ns["containerConfig"]["env"] == [] and ns["containerConfig"]["additionalMounts"] == []
    assert ns["id"]
    assert parse_time(ns["createdAt"]) == parse_time(ns["updatedAt"])


async def test_create_keeps_every_given_field(client):
    config = {"image": "agent:v2", "timeoutSecs": 600, "idleTimeoutSecs": 60, "env": ["LANG=C.UTF-8"],
              "additionalMounts": []}
    ns = await create(client, "dev", description="d", chatJids=["tg:1", "slack:C2"], trigger="@Bot",
                      requiresTrigger=False, isMain=True, containerConfig=config)
    assert ns["chatJids"] == ["tg:1", "slack:C2"]
    assert ns["trigger"] == "@Bot"
    assert ns["requiresTrigger"] is False
    assert ns["isMain"] is True
    for key, value in config.items():
        assert ns["containerConfig"][key] == value
    assert (await client.get(f"{NS}/dev")).json() == {**ns, "imageFlavor": None}


async def test_create_makes_the_group_folder(client, settings):
    await create(client, "ops")
    assert (settings.data_dir / "groups" / "ops").is_dir()


@pytest.mark.parametrize("name", ["a", "Z9", "team_1-x", "0lead", "x" * 64])
async def test_valid_names_are_accepted(client, name):
    assert (await create(client, name))["name"] == name


@pytest.mark.parametrize("name", [
    "", "-lead", "_lead", "has space", "a/b", "a.b", "..", "x" * 65, "émigré", "tab\t", "line\n",
])
async def test_invalid_names_are_a_400_naming_the_field(client, settings, name):
    error = assert_error(await client.post(NS, json={"name": name}), 400, "VALIDATION_ERROR")
    assert error_fields(error) == {"name"}
    assert not (settings.data_dir / "groups").exists() or list((settings.data_dir / "groups").iterdir()) == []


@pytest.mark.parametrize("name", ["global", "GLOBAL", "Global"])
async def test_global_is_a_reserved_name(client, name):
    error = assert_error(await client.post(NS, json={"name": name}), 400)
    assert "reserved" in error["message"]


async def test_duplicate_name_is_a_409(client):
    await create(client, "dup")
    assert_error(await client.post(NS, json={"name": "dup"}), 409, "CONFLICT")


async def test_chat_jid_already_in_another_namespace_is_a_409_naming_both(client, settings):
    await create(client, "first", chatJids=["tg:100"])
    error = assert_error(await client.post(NS, json={"name": "second", "chatJids": ["tg:100"]}), 409, "CONFLICT")
    assert error["details"] == [{"chatJid": "tg:100", "namespace": "first"}]
    assert_error(await client.get(f"{NS}/second"), 404)


async def test_a_refused_create_leaves_no_folder_behind(client, settings):
    await create(client, "first", chatJids=["tg:100"])
    await client.post(NS, json={"name": "second", "chatJids": ["tg:100"]})
    assert not (settings.data_dir / "groups" / "second").exists()


async def test_the_same_chat_listed_twice_is_a_400(client):
    assert_error(await client.post(NS, json={"name": "a", "chatJids": ["tg:1", "tg:1"]}), 400)


@pytest.mark.parametrize("jid", ["12345", "tg:", ":123", "tg:1 2"])
async def test_malformed_chat_jid_is_a_400(client, jid):
    error = assert_error(await client.post(NS, json={"name": "a", "chatJids": [jid]}), 400)
    assert "JID" in error["message"]


async def test_a_second_main_namespace_is_a_409(client):
    await create(client, "main", isMain=True)
    error = assert_error(await client.post(NS, json={"name": "other", "isMain": True}), 409, "CONFLICT")
    assert "main" in error["message"]


async def test_invalid_container_config_is_a_400_naming_the_field(client):
    error = assert_error(await client.post(NS, json={"name": "a", "containerConfig": {"env": ["1BAD=x"]}}), 400)
    assert error_fields(error) == {"containerConfig.env"}


async def test_env_given_as_a_mapping_is_stored_as_a_list(client):
    ns = await create(client, "a", containerConfig={"env": {"LANG": "C", "TZ": "UTC"}})
    assert ns["containerConfig"]["env"] == ["LANG=C", "TZ=UTC"]


async def test_creating_a_namespace_is_audited_as_info(client):
    await create(client, "audited")
    entries = (await client.get("/container/audit-log", params={"group": "audited"})).json()["entries"]
    assert [(e["severity"], e["category"]) for e in entries] == [("info", "config")]


# -- list and get -------------------------------------------------------------

async def test_list_is_empty_at_first(client):
    assert (await client.get(NS)).json() == {"namespaces": []}


async def test_list_returns_every_namespace_by_name(client):
    for name in ("zeta", "alpha", "mid"):
        await create(client, name)
    names = [ns["name"] for ns in (await client.get(NS)).json()["namespaces"]]
    assert names == ["alpha", "mid", "zeta"]


async def test_get_returns_the_namespace(client):
    created = await create(client, "one", chatJids=["dc:9"])
    # GET adds the flavour of the namespace's image; null here, without a container engine.
    assert (await client.get(f"{NS}/one")).json() == {**created, "imageFlavor": None}


async def test_get_unknown_is_a_404(client):
    error = assert_error(await client.get(f"{NS}/nobody"), 404, "NOT_FOUND")
    assert "nobody" in error["message"]


async def test_get_global_is_a_404_not_the_instructions(client):
    assert_error(await client.get(f"{NS}/global"), 404, "NOT_FOUND")


# -- update -----------------------------------------------------------------

async def test_update_changes_only_the_given_fields(client):
    created = await create(client, "u", description="old", chatJids=["tg:1"], trigger="@Andy")
    answer = await client.put(f"{NS}/u", json={"description": "new", "requiresTrigger": False})
    assert answer.status_code == 200
    updated = answer.json()
    assert updated["description"] == "new"
    assert updated["requiresTrigger"] is False
    assert updated["chatJids"] == ["tg:1"]
    assert updated["trigger"] == "@Andy"
    assert updated["createdAt"] == created["createdAt"]
    assert parse_time(updated["updatedAt"]) >= parse_time(created["updatedAt"])
    assert (await client.get(f"{NS}/u")).json() == {**updated, "imageFlavor": None}


async def test_update_replaces_the_chat_list(client):
    await create(client, "u", chatJids=["tg:1", "tg:2"])
    updated = (await client.put(f"{NS}/u", json={"chatJids": ["tg:3"]})).json()
    assert updated["chatJids"] == ["tg:3"]


async def test_update_accepts_the_object_it_got_back(client):
    ns = await create(client, "roundtrip", chatJids=["tg:1"])
    ns["description"] = "edited"
    answer = await client.put(f"{NS}/roundtrip", json=ns)
    assert answer.status_code == 200, answer.text
    assert answer.json()["description"] == "edited"


async def test_update_can_set_an_empty_description(client):
    await create(client, "u", description="something")
    assert (await client.put(f"{NS}/u", json={"description": ""})).json()["description"] == ""


async def test_update_of_unknown_namespace_is_a_404(client):
    assert_error(await client.put(f"{NS}/ghost", json={"description": "x"}), 404, "NOT_FOUND")


async def test_update_cannot_rename(client):
    await create(client, "fixed")
    error = assert_error(await client.put(f"{NS}/fixed", json={"name": "other"}), 400)
    assert "renamed" in error["message"]


async def test_update_cannot_change_the_id(client):
    await create(client, "fixed")
    assert_error(await client.put(f"{NS}/fixed", json={"id": "something-else"}), 400)


async def test_update_taking_a_chat_of_another_namespace_is_a_409(client):
    await create(client, "a", chatJids=["tg:1"])
    await create(client, "b")
    assert_error(await client.put(f"{NS}/b", json={"chatJids": ["tg:1"]}), 409, "CONFLICT")
    assert (await client.get(f"{NS}/b")).json()["chatJids"] == []


async def test_a_chat_released_by_one_namespace_can_join_another(client):
    await create(client, "a", chatJids=["tg:1"])
    await create(client, "b")
    await client.put(f"{NS}/a", json={"chatJids": []})
    assert (await client.put(f"{NS}/b", json={"chatJids": ["tg:1"]})).json()["chatJids"] == ["tg:1"]


async def test_update_making_a_second_main_is_a_409(client):
    await create(client, "main", isMain=True)
    await create(client, "other")
    assert_error(await client.put(f"{NS}/other", json={"isMain": True}), 409, "CONFLICT")


async def test_main_can_move_once_the_old_main_is_unset(client):
    await create(client, "main", isMain=True)
    await create(client, "other")
    assert (await client.put(f"{NS}/main", json={"isMain": False})).json()["isMain"] is False
    assert (await client.put(f"{NS}/other", json={"isMain": True})).json()["isMain"] is True


async def test_the_main_namespace_may_update_itself(client):
    await create(client, "main", isMain=True)
    assert (await client.put(f"{NS}/main", json={"isMain": True, "trigger": "@Main"})).status_code == 200


async def test_update_with_invalid_container_config_is_a_400(client):
    await create(client, "u")
    error = assert_error(await client.put(f"{NS}/u", json={"containerConfig": {"timeoutSecs": -1}}), 400)
    assert error_fields(error) == {"containerConfig.timeoutSecs"}


# -- delete -------------------------------------------------------------------

async def test_delete_answers_204_and_the_namespace_is_gone(client):
    await create(client, "gone")
    answer = await client.delete(f"{NS}/gone")
    assert answer.status_code == 204
    assert answer.content == b""
    assert_error(await client.get(f"{NS}/gone"), 404)


async def test_delete_keeps_the_folder(client, settings):
    await create(client, "kept")
    await client.put(f"{NS}/kept/instructions", json={"instructions": "remember me"})
    await client.delete(f"{NS}/kept")
    assert (settings.data_dir / "groups" / "kept" / "CLAUDE.md").read_text() == "remember me"


async def test_delete_with_purge_removes_the_folder(client, settings):
    await create(client, "purged")
    await client.put(f"{NS}/purged/instructions", json={"instructions": "x"})
    assert (await client.delete(f"{NS}/purged", params={"purge": "true"})).status_code == 204
    assert not (settings.data_dir / "groups" / "purged").exists()


async def test_delete_with_purge_leaves_other_groups_and_global_alone(client, settings):
    await create(client, "purged")
    await create(client, "neighbour")
    await client.put(f"{NS}/global/instructions", json={"instructions": "g"})
    await client.delete(f"{NS}/purged", params={"purge": "true"})
    assert (settings.data_dir / "groups" / "neighbour").is_dir()
    assert (settings.data_dir / "groups" / "global" / "CLAUDE.md").read_text() == "g"


async def test_delete_frees_its_chats_and_its_name(client):
    await create(client, "old", chatJids=["tg:5"], isMain=True)
    await client.delete(f"{NS}/old")
    await create(client, "new", chatJids=["tg:5"], isMain=True)
    await create(client, "old")


async def test_delete_unknown_is_a_404(client):
    assert_error(await client.delete(f"{NS}/ghost"), 404, "NOT_FOUND")


async def test_delete_global_is_a_404(client, settings):
    await client.put(f"{NS}/global/instructions", json={"instructions": "g"})
    assert_error(await client.delete(f"{NS}/global", params={"purge": "true"}), 404)
    assert (settings.data_dir / "groups" / "global" / "CLAUDE.md").exists()


async def test_delete_with_an_invalid_purge_value_is_a_400(client):
    await create(client, "x")
    error = assert_error(await client.delete(f"{NS}/x", params={"purge": "maybe"}), 400)
    assert error_fields(error) == {"purge"}
    assert (await client.get(f"{NS}/x")).status_code == 200


async def test_deleting_is_audited_as_info(client):
    await create(client, "bye")
    await client.delete(f"{NS}/bye")
    entries = (await client.get("/container/audit-log", params={"group": "bye"})).json()["entries"]
    assert [e["message"] for e in entries][0] == "namespace bye deleted"
    assert entries[0]["severity"] == "info"



async def test_a_refused_namespace_write_leaves_no_audit_entry(client):
    """The entry is written in the write's own transaction: a write that is refused or rolled back
    leaves none."""
    await create(client, "once")
    assert_error(await client.post(NS, json={"name": "once"}), 409)
    assert_error(await client.delete(f"{NS}/ghost"), 404)
    assert_error(await client.put(f"{NS}/once", json={"chatJids": ["tg:1", "tg:1"]}), 400)
    messages = [e["message"] for e in (await client.get("/container/audit-log", params={"limit": 500})).json()["entries"]]
    assert messages.count("namespace once created") == 1
    assert not [m for m in messages if "ghost" in m or "once updated" in m]

# -- the name rule shared with other modules (the IPC watcher checks folder names with it) ---

@pytest.mark.parametrize("name", ["abc\n", "abc\r\n", "a" * 64 + "\n"])
def test_the_group_name_rule_refuses_a_trailing_newline(name):
    from nanoclaw.models import GROUP_NAME_RE, ENV_NAME_RE

    assert GROUP_NAME_RE.match(name) is None
    assert ENV_NAME_RE.match(name) is None
