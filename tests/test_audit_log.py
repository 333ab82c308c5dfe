"""The audit log: audit.record() and GET /container/audit-log (issue 2, item 11)."""
from __future__ import annotations

import datetime as dt

import pytest

from checks import assert_error, error_fields

PATH = "/container/audit-log"


async def entries(client, **params) -> list[dict]:
    answer = await client.get(PATH, params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()["entries"]


async def record_many(server, count: int, **kwargs) -> None:
    for i in range(count):
        await server.services.audit.record(kwargs.get("severity", "info"), "test", f"event {i}",
                                           group=kwargs.get("group"))


async def test_audit_log_is_empty_at_first(client):
    assert await entries(client) == []


async def test_an_entry_has_every_field(client, server):
    await server.services.audit.record("warning", "auth", "something odd", group="ops", details={"n": 1})
    [entry] = await entries(client)
    assert entry["severity"] == "warning"
    assert entry["category"] == "auth"
    assert entry["message"] == "something odd"
    assert entry["group"] == "ops"
    assert entry["details"] == {"n": 1}
    assert isinstance(entry["id"], int)
    when = dt.datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00"))
    assert abs((dt.datetime.now(dt.timezone.utc) - when).total_seconds()) < 60


async def test_entries_come_newest_first(client, server):
    await record_many(server, 3)
    assert [e["message"] for e in await entries(client)] == ["event 2", "event 1", "event 0"]


async def test_limit_defaults_to_50(client, server):
    await record_many(server, 60)
    assert len(await entries(client)) == 50


async def test_limit_returns_the_newest_entries(client, server):
    await record_many(server, 10)
    assert [e["message"] for e in await entries(client, limit=2)] == ["event 9", "event 8"]


async def test_limit_is_clamped_to_500(client, server):
    await record_many(server, 505)
    assert len(await entries(client, limit=100000)) == 500


@pytest.mark.parametrize("limit", [0, -5])
async def test_a_limit_below_one_is_clamped_to_one(client, server, limit):
    await record_many(server, 3)
    assert len(await entries(client, limit=limit)) == 1


async def test_a_limit_that_is_not_a_number_is_a_400(client):
    error = assert_error(await client.get(PATH, params={"limit": "ten"}), 400, "VALIDATION_ERROR")
    assert error_fields(error) == {"limit"}


async def test_filter_by_group(client, server):
    await record_many(server, 2, group="alpha")
    await record_many(server, 3, group="beta")
    await record_many(server, 1)
    found = await entries(client, group="beta")
    assert len(found) == 3
    assert {e["group"] for e in found} == {"beta"}


async def test_filter_by_severity(client, server):
    await record_many(server, 2, severity="info")
    await record_many(server, 1, severity="violation")
    await record_many(server, 1, severity="error")
    assert [e["severity"] for e in await entries(client, severity="violation")] == ["violation"]
    assert len(await entries(client, severity="info")) == 2


async def test_filters_combine(client, server):
    await server.services.audit.record("violation", "mount", "a", group="alpha")
    await server.services.audit.record("violation", "mount", "b", group="beta")
    await server.services.audit.record("info", "config", "c", group="alpha")
    assert [e["message"] for e in await entries(client, group="alpha", severity="violation")] == ["a"]


async def test_filters_and_limit_combine(client, server):
    await record_many(server, 5, group="alpha")
    await record_many(server, 5, group="beta")
    found = await entries(client, group="alpha", limit=2)
    assert [e["message"] for e in found] == ["event 4", "event 3"]
    assert {e["group"] for e in found} == {"alpha"}


async def test_an_unknown_severity_filter_is_a_400(client):
    error = assert_error(await client.get(PATH, params={"severity": "critical"}), 400, "VALIDATION_ERROR")
    assert error_fields(error) == {"severity"}


async def test_record_refuses_an_unknown_severity(server):
    with pytest.raises(ValueError):
        await server.services.audit.record("critical", "test", "x")


async def test_entries_never_contain_a_known_secret(client, server):
    server.services.secrets.remember("sk-live-abcdef123456")
    await server.services.audit.record("error", "proxy", "upstream refused sk-live-abcdef123456",
                                       details={"header": "Bearer sk-live-abcdef123456"})
    answer = await client.get(PATH)
    assert "sk-live-abcdef123456" not in answer.text
    [entry] = answer.json()["entries"]
    assert "[REDACTED]" in entry["message"]
    assert entry["details"] == {"header": "Bearer [REDACTED]"}


async def test_config_changes_are_recorded_as_info_from_day_one(client):
    await client.post("/container/namespaces", json={"name": "n"})
    await client.put("/channels/sender-allowlist", json={"enabled": False, "entries": []})
    await client.put("/container/mount/allowlist", json={"allowedRoots": [], "blockedPatterns": []})
    found = await entries(client, severity="info")
    assert [e["category"] for e in found] == ["config", "config", "config"]
