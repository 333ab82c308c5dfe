"""Mount allowlist and validation against real directories (issue 2, item 9; architecture.md section 4).

Test names stay clear of the blocked patterns (credentials, id_rsa, ...): pytest
names tmp_path after the test, and a blocked word there would refuse every path.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from checks import assert_error, error_fields

ALLOWLIST = "/container/mount/allowlist"
VALIDATE = "/container/mount/validate"
DEFAULT_BLOCKED = {".ssh", ".gnupg", ".gpg", ".aws", ".azure", ".gcloud", ".kube", ".docker", "credentials",
                   ".env", ".netrc", ".npmrc", ".pypirc", "id_rsa", "id_ed25519", "private_key", ".secret"}


class Tree:
    """host/ro (read-only root), host/rw (read-write root), outside/ (no root)."""

    def __init__(self, base: Path) -> None:
        self.base = base.resolve()
        self.ro = self.base / "host" / "ro"
        self.rw = self.base / "host" / "rw"
        self.outside = self.base / "outside"
        for path in (self.ro / "project", self.rw / "scratch", self.outside / "elsewhere"):
            path.mkdir(parents=True)


@pytest.fixture
async def tree(client, tmp_path) -> Tree:
    tree = Tree(tmp_path)
    answer = await client.put(ALLOWLIST, json={
        "allowedRoots": [str(tree.ro), {"path": str(tree.rw), "allowReadWrite": True}],
        "blockedPatterns": [],
    })
    assert answer.status_code == 200, answer.text
    return tree


async def validate(client, host_path, container_path="data", read_only=True) -> dict:
    answer = await client.post(VALIDATE, json={"hostPath": str(host_path), "containerPath": container_path,
                                               "readOnly": read_only})
    assert answer.status_code == 200, answer.text
    return answer.json()


async def violations(client) -> list[dict]:
    return (await client.get("/container/audit-log", params={"severity": "violation"})).json()["entries"]


# -- the allowlist --------------------------------------------------------------

async def test_allowlist_is_empty_with_the_default_blocked_patterns_at_first(client):
    answer = await client.get(ALLOWLIST)
    assert answer.status_code == 200
    assert answer.json()["allowedRoots"] == []
    assert answer.json()["blockedPatterns"] == []
    assert set(answer.json()["builtInBlockedPatterns"]) == DEFAULT_BLOCKED


async def test_put_allowlist_then_get_it_back(client, tmp_path):
    roots = [str(tmp_path / "a"), {"path": str(tmp_path / "b"), "allowReadWrite": True, "description": ""}]
    answer = await client.put(ALLOWLIST, json={"allowedRoots": roots, "blockedPatterns": ["node_modules"]})
    assert answer.status_code == 200
    got = (await client.get(ALLOWLIST)).json()
    assert got == answer.json()
    assert got["allowedRoots"] == roots


async def test_blocked_patterns_round_trip_and_the_built_ins_are_reported_apart(client):
    # Issue 12, item 13: GET returns blockedPatterns as sent; the built-ins have their own field.
    sent = {"allowedRoots": [], "blockedPatterns": ["node_modules", ".ssh"]}
    answer = await client.put(ALLOWLIST, json=sent)
    got = (await client.get(ALLOWLIST)).json()
    assert got == answer.json()
    assert got["blockedPatterns"] == ["node_modules", ".ssh"]
    assert set(got["builtInBlockedPatterns"]) == DEFAULT_BLOCKED
    # What GET gave can be PUT back unchanged (the read-only field is ignored).
    assert (await client.put(ALLOWLIST, json=got)).json() == got


async def test_the_built_in_patterns_are_enforced_even_when_none_are_sent(client, tmp_path):
    (tmp_path / "home" / ".aws").mkdir(parents=True)
    await client.put(ALLOWLIST, json={"allowedRoots": [str(tmp_path / "home")], "blockedPatterns": []})
    answer = (await client.post("/container/mount/validate", json={
        "hostPath": str(tmp_path / "home" / ".aws"), "containerPath": "aws"})).json()
    assert answer["allowed"] is False and ".aws" in answer["message"]


async def test_allowlist_is_a_json_file_in_the_config_dir_never_the_data_dir(client, settings, tmp_path):
    await client.put(ALLOWLIST, json={"allowedRoots": [str(tmp_path / "a")], "blockedPatterns": ["x"]})
    stored = json.loads((settings.config_dir / "mount-allowlist.json").read_text())
    assert stored["allowedRoots"] == [str(tmp_path / "a")]
    assert stored["blockedPatterns"] == ["x"]
    in_data = [p for p in settings.data_dir.rglob("*") if "allowlist" in p.name]
    assert in_data == []


async def test_allowlist_file_is_replaced_atomically(client, settings, tmp_path):
    await client.put(ALLOWLIST, json={"allowedRoots": [str(tmp_path / "first")], "blockedPatterns": []})
    path = settings.config_dir / "mount-allowlist.json"
    with open(path, "rb") as reader:
        await client.put(ALLOWLIST, json={"allowedRoots": [str(tmp_path / "second")], "blockedPatterns": []})
        assert str(tmp_path / "first") in json.loads(reader.read())["allowedRoots"]
    assert [p.name for p in settings.config_dir.iterdir() if "allowlist" in p.name] == ["mount-allowlist.json"]


async def test_a_relative_allowed_root_is_a_400(client):
    error = assert_error(await client.put(ALLOWLIST, json={"allowedRoots": ["projects"], "blockedPatterns": []}), 400)
    assert "absolute" in error["message"]


@pytest.mark.parametrize("pattern", ["", "  ", "a/b", "nul\x00"])
async def test_a_blocked_pattern_that_is_not_one_path_component_is_a_400(client, pattern):
    assert_error(await client.put(ALLOWLIST, json={"allowedRoots": [], "blockedPatterns": [pattern]}), 400)


async def test_an_allowed_root_with_a_nul_byte_is_a_400(client):
    assert_error(await client.put(ALLOWLIST, json={"allowedRoots": ["/tmp\x00x"], "blockedPatterns": []}), 400)


async def test_a_misspelt_allowlist_field_is_a_400(client, tmp_path):
    error = assert_error(await client.put(ALLOWLIST, json={"allowedRoots": [], "blockedPattern": ["x"]}), 400,
                         "VALIDATION_ERROR")
    assert error_fields(error) == {"blockedPattern"}


async def test_a_misspelt_root_field_is_a_400(client, tmp_path):
    body = {"allowedRoots": [{"path": str(tmp_path), "allowReadwrite": True}], "blockedPatterns": []}
    assert_error(await client.put(ALLOWLIST, json=body), 400, "VALIDATION_ERROR")


async def test_a_refused_allowlist_leaves_the_stored_one_alone(client, tmp_path):
    await client.put(ALLOWLIST, json={"allowedRoots": [str(tmp_path)], "blockedPatterns": []})
    await client.put(ALLOWLIST, json={"allowedRoots": ["relative"], "blockedPatterns": []})
    assert (await client.get(ALLOWLIST)).json()["allowedRoots"] == [str(tmp_path)]


async def test_changing_the_allowlist_is_audited_as_info(client, tmp_path):
    await client.put(ALLOWLIST, json={"allowedRoots": [str(tmp_path)], "blockedPatterns": []})
    entries = (await client.get("/container/audit-log")).json()["entries"]
    assert entries[0]["severity"] == "info"
    assert "allowlist" in entries[0]["message"]


# -- validation: allowed ----------------------------------------------------------

async def test_a_folder_under_a_read_only_root_is_allowed_read_only(client, tree):
    decision = await validate(client, tree.ro / "project", "myapp")
    assert decision["allowed"] is True
    assert decision["canonicalHostPath"] == str(tree.ro / "project")
    assert decision["containerPath"] == "/workspace/extra/myapp"
    assert decision["readOnly"] is True
    assert decision["message"]


async def test_the_root_itself_is_allowed(client, tree):
    assert (await validate(client, tree.ro))["allowed"] is True


async def test_read_write_on_a_read_write_root_is_allowed_read_write(client, tree):
    decision = await validate(client, tree.rw / "scratch", "scratch", read_only=False)
    assert decision["allowed"] is True
    assert decision["readOnly"] is False


async def test_read_only_on_a_read_write_root_stays_read_only(client, tree):
    decision = await validate(client, tree.rw / "scratch", "scratch", read_only=True)
    assert decision["allowed"] is True
    assert decision["readOnly"] is True


async def test_read_only_is_the_default(client, tree):
    answer = await client.post(VALIDATE, json={"hostPath": str(tree.rw / "scratch"), "containerPath": "s"})
    assert answer.json()["readOnly"] is True


async def test_a_nested_container_path_lands_under_workspace_extra(client, tree):
    assert (await validate(client, tree.ro / "project", "team/app"))["containerPath"] == "/workspace/extra/team/app"


async def test_a_container_path_already_under_workspace_extra_is_accepted(client, tree):
    decision = await validate(client, tree.ro / "project", "/workspace/extra/myapp")
    assert decision["allowed"] is True
    assert decision["containerPath"] == "/workspace/extra/myapp"


async def test_a_symlink_that_stays_inside_the_root_is_allowed_as_its_target(client, tree):
    (tree.ro / "shortcut").symlink_to(tree.ro / "project")
    decision = await validate(client, tree.ro / "shortcut")
    assert decision["allowed"] is True
    assert decision["canonicalHostPath"] == str(tree.ro / "project")


async def test_a_root_given_through_a_symlink_is_canonicalised(client, tmp_path):
    real = (tmp_path / "real-root").resolve()
    (real / "work").mkdir(parents=True)
    (tmp_path / "root-link").symlink_to(real)
    await client.put(ALLOWLIST, json={"allowedRoots": [str(tmp_path / "root-link")], "blockedPatterns": []})
    decision = await validate(client, real / "work")
    assert decision["allowed"] is True
    assert decision["canonicalHostPath"] == str(real / "work")


async def test_a_dotdot_that_stays_inside_the_root_is_resolved_and_allowed(client, tree):
    decision = await validate(client, f"{tree.ro}/project/../project")
    assert decision["allowed"] is True
    assert decision["canonicalHostPath"] == str(tree.ro / "project")


async def test_an_allowed_mount_is_not_audited_as_a_violation(client, tree):
    await validate(client, tree.ro / "project")
    assert await violations(client) == []


# -- validation: refused ----------------------------------------------------------

async def test_a_symlink_escaping_the_root_is_refused(client, tree):
    (tree.ro / "escape").symlink_to(tree.outside / "elsewhere")
    decision = await validate(client, tree.ro / "escape")
    assert decision["allowed"] is False
    assert decision["canonicalHostPath"] == str(tree.outside / "elsewhere")
    assert "not under any allowed root" in decision["message"]


async def test_a_symlinked_parent_escaping_the_root_is_refused(client, tree):
    (tree.ro / "linked-dir").symlink_to(tree.outside)
    decision = await validate(client, tree.ro / "linked-dir" / "elsewhere")
    assert decision["allowed"] is False
    assert "not under any allowed root" in decision["message"]


async def test_dotdot_segments_escaping_the_root_are_refused(client, tree):
    decision = await validate(client, f"{tree.ro}/project/../../../outside/elsewhere")
    assert decision["allowed"] is False
    assert decision["canonicalHostPath"] == str(tree.outside / "elsewhere")
    assert "not under any allowed root" in decision["message"]


@pytest.mark.parametrize("container_path", ["../escape", "a/../../b", "..", "/workspace/extra/../../etc"])
async def test_dotdot_in_the_container_path_is_refused(client, tree, container_path):
    decision = await validate(client, tree.ro / "project", container_path)
    assert decision["allowed"] is False
    assert "'..'" in decision["message"]


@pytest.mark.parametrize("container_path", ["./x", "x/./y", "x/.", "/workspace/extra/./x"])
async def test_dot_segments_in_the_container_path_are_refused(client, tree, container_path):
    # Issue 22, item 10d: the path is normalised later, so the raw segments decide.
    decision = await validate(client, tree.ro / "project", container_path)
    assert decision["allowed"] is False
    assert "'.' segments" in decision["message"]


@pytest.mark.parametrize("suffix", ["/./project", "/project/.", "/project/./"])
async def test_dot_segments_in_the_host_path_are_refused(client, tree, suffix):
    decision = await validate(client, f"{tree.ro}{suffix}")
    assert decision["allowed"] is False
    assert "'.' segments" in decision["message"]


@pytest.mark.parametrize("container_path", ["data:rw", "a:b", "data,ro", "x,y:z"])
async def test_colon_and_comma_in_the_container_path_are_refused(client, tree, container_path):
    decision = await validate(client, tree.ro / "project", container_path)
    assert decision["allowed"] is False
    assert "':' or ','" in decision["message"]


@pytest.mark.parametrize("container_path", ["/etc/passwd", "/workspace/extra", "/workspace/extra/", ".", "./"])
async def test_a_container_path_outside_workspace_extra_is_refused(client, tree, container_path):
    decision = await validate(client, tree.ro / "project", container_path)
    assert decision["allowed"] is False


async def test_an_empty_container_path_is_a_400(client, tree):
    answer = await client.post(VALIDATE, json={"hostPath": str(tree.ro), "containerPath": ""})
    assert error_fields(assert_error(answer, 400, "VALIDATION_ERROR")) == {"containerPath"}


@pytest.mark.parametrize("component", [".ssh", ".gnupg", ".aws", ".env", "id_rsa", "id_ed25519", "credentials"])
async def test_a_blocked_component_is_refused_naming_the_pattern(client, tree, component):
    target = tree.ro / "project" / component
    target.mkdir()
    decision = await validate(client, target)
    assert decision["allowed"] is False
    assert f"matches blocked pattern '{component}'" in decision["message"]


async def test_a_path_below_a_blocked_component_is_refused(client, tree):
    (tree.ro / ".ssh" / "keys").mkdir(parents=True)
    decision = await validate(client, tree.ro / ".ssh" / "keys")
    assert decision["allowed"] is False
    assert "'.ssh'" in decision["message"]


async def test_a_blocked_file_is_refused(client, tree):
    (tree.ro / "project" / "id_rsa").write_text("-----BEGIN KEY-----")
    decision = await validate(client, tree.ro / "project" / "id_rsa")
    assert decision["allowed"] is False
    assert "'id_rsa'" in decision["message"]


async def test_a_component_containing_a_blocked_pattern_is_refused(client, tree):
    (tree.ro / "backup.ssh.old").mkdir()
    assert (await validate(client, tree.ro / "backup.ssh.old"))["allowed"] is False


async def test_a_symlink_to_a_blocked_component_is_refused(client, tree):
    (tree.ro / "project" / ".aws").mkdir()
    (tree.ro / "innocent").symlink_to(tree.ro / "project" / ".aws")
    decision = await validate(client, tree.ro / "innocent")
    assert decision["allowed"] is False
    assert "'.aws'" in decision["message"]


async def test_a_blocked_name_on_the_way_to_an_allowed_target_is_refused(client, tree):
    (tree.ro / ".secret-link").symlink_to(tree.ro / "project")
    assert (await validate(client, tree.ro / ".secret-link"))["allowed"] is False


async def test_a_configured_blocked_pattern_is_refused(client, tree):
    await client.put(ALLOWLIST, json={"allowedRoots": [str(tree.ro)], "blockedPatterns": ["node_modules"]})
    (tree.ro / "project" / "node_modules").mkdir()
    decision = await validate(client, tree.ro / "project" / "node_modules")
    assert decision["allowed"] is False
    assert "'node_modules'" in decision["message"]


async def test_a_missing_host_path_is_refused(client, tree):
    decision = await validate(client, tree.ro / "not-there")
    assert decision["allowed"] is False
    assert "does not exist" in decision["message"]


async def test_a_dangling_symlink_is_refused_as_missing(client, tree):
    (tree.ro / "dangling").symlink_to(tree.ro / "gone")
    decision = await validate(client, tree.ro / "dangling")
    assert decision["allowed"] is False
    assert "does not exist" in decision["message"]


async def test_a_symlink_loop_is_refused_with_a_clear_message(client, tree):
    (tree.ro / "a").symlink_to(tree.ro / "b")
    (tree.ro / "b").symlink_to(tree.ro / "a")
    decision = await validate(client, tree.ro / "a")
    assert decision["allowed"] is False
    assert "cannot be resolved" in decision["message"] and "loop" in decision["message"].lower()


async def test_read_write_on_a_read_only_root_is_refused(client, tree):
    decision = await validate(client, tree.ro / "project", read_only=False)
    assert decision["allowed"] is False
    assert "read-only" in decision["message"]
    assert str(tree.ro) in decision["message"]


async def test_a_path_outside_every_root_is_refused(client, tree):
    decision = await validate(client, tree.outside / "elsewhere")
    assert decision["allowed"] is False
    assert "not under any allowed root" in decision["message"]


async def test_a_sibling_with_a_root_as_name_prefix_is_refused(client, tree):
    sibling = Path(str(tree.ro) + "-evil")
    sibling.mkdir()
    assert (await validate(client, sibling))["allowed"] is False


async def test_everything_is_refused_without_an_allowlist(client, tmp_path):
    (tmp_path / "anything").mkdir()
    decision = await validate(client, tmp_path / "anything")
    assert decision["allowed"] is False


async def test_a_root_that_does_not_exist_allows_nothing(client, tmp_path):
    await client.put(ALLOWLIST, json={"allowedRoots": [str(tmp_path / "later")], "blockedPatterns": []})
    assert (await validate(client, tmp_path))["allowed"] is False


async def test_a_relative_host_path_is_refused(client, tree):
    decision = await validate(client, "host/ro/project")
    assert decision["allowed"] is False
    assert "absolute" in decision["message"]


async def test_a_host_path_with_a_nul_byte_is_refused_not_a_500(client, tree):
    decision = await validate(client, f"{tree.ro}/project\x00/etc")
    assert decision["allowed"] is False


async def test_the_server_data_and_config_dirs_are_never_mounted(client, settings, tmp_path):
    await client.put(ALLOWLIST, json={"allowedRoots": [{"path": str(tmp_path), "allowReadWrite": True}],
                                      "blockedPatterns": []})
    await client.post("/container/namespaces", json={"name": "n"})
    for path in (settings.data_dir, settings.data_dir / "groups" / "n", settings.config_dir, tmp_path):
        decision = await validate(client, path)
        assert decision["allowed"] is False, path
        assert "never mounted" in decision["message"]


async def test_a_refused_dry_run_is_audited_as_info_not_as_a_violation(client, tree):
    # Issue 22, item 10b: validate is a dry run; it must not raise the violation count.
    before = (await client.get("/container/metrics")).json()["securityEvents"]["violation"]
    await validate(client, tree.outside / "elsewhere", "leak")
    assert (await client.get("/container/metrics")).json()["securityEvents"]["violation"] == before
    assert await violations(client) == []
    answer = await client.get("/container/audit-log", params={"severity": "info"})
    [entry] = [e for e in answer.json()["entries"] if e["category"] == "mount"]
    assert entry["severity"] == "info"
    assert "not under any allowed root" in entry["message"]
    assert entry["details"] == {"hostPath": str(tree.outside / "elsewhere"), "containerPath": "leak"}


async def test_an_unreadable_allowlist_file_refuses_every_mount(client, tree, settings):
    (settings.config_dir / "mount-allowlist.json").write_text("{not json")
    decision = await validate(client, tree.ro / "project")
    assert decision["allowed"] is False
    assert "mount-allowlist.json" in decision["message"]
    error = assert_error(await client.get(ALLOWLIST), 503)
    assert "mount-allowlist.json" in error["message"]


async def test_a_hand_written_allowlist_file_is_honoured(client, tmp_path, settings):
    (tmp_path / "hand").mkdir()
    settings.config_dir.mkdir(parents=True, exist_ok=True)
    (settings.config_dir / "mount-allowlist.json").write_text(json.dumps({
        "allowedRoots": [{"path": str(tmp_path / "hand"), "allowReadWrite": True, "description": "by hand"}],
        "blockedPatterns": [],
    }))
    assert (await validate(client, tmp_path / "hand", read_only=False))["allowed"] is True


# -- mounts in a namespace's containerConfig ------------------------------------

async def test_a_namespace_with_a_refused_mount_is_a_400_and_a_violation(client, tree):
    body = {"name": "leaky", "containerConfig": {"additionalMounts": [
        {"hostPath": str(tree.outside / "elsewhere"), "containerPath": "x"}]}}
    error = assert_error(await client.post("/container/namespaces", json=body), 400, "MOUNT_REFUSED")
    assert error["details"][0]["hostPath"] == str(tree.outside / "elsewhere")
    assert_error(await client.get("/container/namespaces/leaky"), 404)
    [entry] = await violations(client)
    assert entry["group"] == "leaky"


async def test_a_namespace_with_allowed_mounts_keeps_them(client, tree):
    mounts = [{"hostPath": str(tree.ro / "project"), "containerPath": "project", "readOnly": True},
              {"hostPath": str(tree.rw / "scratch"), "containerPath": "scratch", "readOnly": False}]
    answer = await client.post("/container/namespaces", json={"name": "ok", "containerConfig": {
        "additionalMounts": mounts}})
    assert answer.status_code == 201, answer.text
    assert answer.json()["containerConfig"]["additionalMounts"] == mounts


async def test_updating_a_namespace_with_a_refused_mount_is_a_400(client, tree):
    await client.post("/container/namespaces", json={"name": "ok"})
    body = {"containerConfig": {"additionalMounts": [
        {"hostPath": str(tree.ro / "project"), "containerPath": "p", "readOnly": False}]}}
    assert_error(await client.put("/container/namespaces/ok", json=body), 400, "MOUNT_REFUSED")
    ns = (await client.get("/container/namespaces/ok")).json()
    assert ns["containerConfig"]["additionalMounts"] == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every directory")
async def test_an_unreadable_parent_is_refused_not_a_500(client, tree):
    locked = tree.ro / "locked"
    (locked / "inner").mkdir(parents=True)
    locked.chmod(0)
    try:
        decision = await validate(client, locked / "inner")
    finally:
        locked.chmod(0o755)
    assert decision["allowed"] is False
