"""Issue 12, items 3-5: failed keys are throttled per address and audited in aggregate,
the audit log is pruned by age, and auth-off refuses requests that came in on a
non-loopback address."""
from __future__ import annotations

import httpx
import pytest
import trio

from checks import assert_error
from conftest import make_settings, start_server
from nanoclaw.audit import insert_entry
from nanoclaw.authguard import FLUSH_SECONDS, LIMIT, WINDOW
from nanoclaw.clock import Clock

START = 1_700_000_000  # 20 s into a minute


async def inline(fn, *args):
    return fn(*args)


@pytest.fixture
async def keyed(nursery, tmp_path):
    server = await start_server(nursery, make_settings(tmp_path), clock=Clock(start=START), offload=inline)
    _, raw = await server.services.api_keys.create("tests")
    yield server, raw
    await server.client.aclose()


def client_from(server, address: str) -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(local_address=address)
    return httpx.AsyncClient(base_url=server.api, transport=transport, timeout=30,
                             limits=httpx.Limits(max_keepalive_connections=0))


async def auth_entries(server, key):
    answer = await server.client.get("/container/audit-log", params={"limit": 500}, headers={"X-API-Key": key})
    return [e for e in answer.json()["entries"] if e["category"] == "auth"]


async def test_failed_keys_are_throttled_per_address_and_audited_once_a_minute(keyed, autojump_clock):
    server, key = keyed
    long_path = "/container/namespaces/" + "x" * 7000
    async with client_from(server, "127.0.0.1") as attacker, client_from(server, "127.0.0.2") as other:
        for _ in range(LIMIT):
            assert_error(await attacker.get(long_path, headers={"X-API-Key": "nck_wrong"}), 401)
        for _ in range(5):
            answer = await attacker.get("/container/namespaces", headers={"X-API-Key": "nck_wrong"})
            assert_error(answer, 429, "TOO_MANY_REQUESTS")
            assert 1 <= int(answer.headers["Retry-After"]) <= WINDOW
        # A valid key from the same address and another address's wrong key are not affected.
        assert (await attacker.get("/container/namespaces", headers={"X-API-Key": key})).status_code == 200
        assert_error(await other.get("/container/namespaces", headers={"X-API-Key": "nck_wrong"}), 401)

        await trio.sleep(FLUSH_SECONDS + 1)
        entries = await auth_entries(server, key)
        by_address = {e["details"]["remoteAddr"]: e for e in entries}
        assert len(entries) == 2 and set(by_address) == {"127.0.0.1", "127.0.0.2"}
        assert by_address["127.0.0.1"]["details"]["count"] == LIMIT + 5
        assert by_address["127.0.0.1"]["details"]["throttled"] == 5
        assert by_address["127.0.0.2"]["details"]["count"] == 1
        assert len(by_address["127.0.0.1"]["message"]) < 400  # the 7 KB path is truncated

        await trio.sleep(WINDOW)  # the window has passed: 401 again, in a new minute's entry
        assert_error(await attacker.get("/container/namespaces", headers={"X-API-Key": "nck_wrong"}), 401)
        assert len(await auth_entries(server, key)) == 3


async def test_audit_entries_older_than_the_retention_are_pruned_in_the_background(nursery, tmp_path,
                                                                                   autojump_clock):
    server = await start_server(nursery, make_settings(tmp_path, audit_retention_days=90),
                                clock=Clock(start=START), offload=inline)
    day = 86400
    for age in (91, 89):
        await server.services.db.write(insert_entry, START - age * day, "info", "test", f"{age} days old")
    await trio.sleep(3601)  # the hourly pruning ran
    messages = [e["message"] for e in (await server.client.get("/container/audit-log")).json()["entries"]]
    assert "89 days old" in messages and "91 days old" not in messages
    await server.client.aclose()


def test_the_retention_comes_from_the_environment():
    from nanoclaw.config import ConfigError, load_settings

    assert load_settings({}).audit_retention_days == 90
    assert load_settings({"NANOCLAW_AUDIT_RETENTION_DAYS": "7"}).audit_retention_days == 7
    with pytest.raises(ConfigError):
        load_settings({"NANOCLAW_AUDIT_RETENTION_DAYS": "-1"})


# -- item 5: auth off, but the request arrived on a non-loopback address ----------------

async def _get_as_if_on(server, listening: tuple[str, int] | None, **settings_changes):
    from nanoclaw.app import create_app

    for name, value in settings_changes.items():
        setattr(server.services.settings, name, value)
    app = create_app(server.services)
    client = app.test_client()
    return await client.get("/api/v1/container/namespaces", scope_base={"server": listening})


async def test_auth_off_refuses_a_request_that_arrived_on_a_non_loopback_address(server):
    answer = await _get_as_if_on(server, ("192.0.2.2", 8000))
    assert answer.status_code == 401
    body = await answer.get_json()
    assert body["error"]["code"] == "UNAUTHORIZED" and "non-loopback" in body["error"]["message"]
    entries = (await server.client.get("/container/audit-log")).json()["entries"]
    assert any(e["category"] == "auth" for e in entries)


@pytest.mark.parametrize("listening", [("127.0.0.1", 8000), ("::1", 8000), None])
async def test_auth_off_serves_what_arrived_on_loopback(server, listening):
    assert (await _get_as_if_on(server, listening)).status_code == 200


async def test_insecure_mode_serves_a_non_loopback_address_without_a_key(server):
    assert (await _get_as_if_on(server, ("0.0.0.0", 8000), allow_insecure=True)).status_code == 200
