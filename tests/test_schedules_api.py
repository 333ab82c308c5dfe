"""/container/schedules over real HTTP against a real server and SQLite file."""
from __future__ import annotations

import datetime as dt

import pytest
import trio

from conftest import start_server
from nanoclaw.clock import Clock
from schedule_support import RecordingSupervisor, inline, unix

DAILY = {"type": "cron", "value": "0 9 * * 1-5"}


def body(**fields) -> dict:
    return {"name": "Daily Report", "group": "reporting", "prompt": "Generate today's summary report",
            "schedule": DAILY} | fields


def parse(ts: str) -> dt.datetime:
    return dt.datetime.fromisoformat(ts)


@pytest.fixture
async def reporting(client):
    r = await client.post("/container/namespaces", json={"name": "reporting", "chatJids": ["tg:42", "tg:43"]})
    assert r.status_code == 201
    return client


async def listed(client) -> list[dict]:
    r = await client.get("/container/schedules")
    assert r.status_code == 200
    return r.json()["schedules"]


async def refused(client, status: int, **fields) -> dict:
    """POST a schedule that must be refused with `status`: creates nothing; returns the envelope's error."""
    r = await client.post("/container/schedules", json=body(**fields))
    assert r.status_code == status, r.text
    assert await listed(client) == []
    return r.json()["error"]


async def test_create_answers_201_with_every_field(reporting):
    spec_body = body(containerConfig={"image": "aigo-agent-runner:latest", "timeoutSecs": 600, "env": []},
                     contextMode="isolated", enabled=True, timezone="UTC")
    r = await reporting.post("/container/schedules", json=spec_body)
    assert r.status_code == 201, r.text
    s = r.json()
    assert {k: s[k] for k in ("name", "group", "prompt", "schedule", "contextMode", "enabled", "timezone")} == {
        k: spec_body[k] for k in ("name", "group", "prompt", "schedule", "contextMode", "enabled", "timezone")}
    assert s["containerConfig"] == {"image": "aigo-agent-runner:latest", "timeoutSecs": 600, "env": []}
    assert (s["status"], s["chatJid"], s["lastRun"], s["lastResult"]) == ("active", "tg:42", None, None)
    next_run = parse(s["nextRun"])
    assert (next_run.weekday() < 5, next_run.hour, next_run.minute) == (True, 9, 0)
    assert dt.timedelta(0) < next_run - dt.datetime.now(dt.timezone.utc) <= dt.timedelta(days=3, hours=9)
    assert s["createdAt"] == s["updatedAt"]
    got = await reporting.get(f"/container/schedules/{s['id']}")
    assert got.status_code == 200 and got.json() == s
    assert await listed(reporting) == [s]


async def test_timezone_defaults_to_the_servers(nursery, settings, monkeypatch):
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    srv = await start_server(nursery, settings)
    async with srv.client as client:
        await client.post("/container/namespaces", json={"name": "reporting"})
        r = await client.post("/container/schedules", json=body())
    assert r.status_code == 201, r.text
    s = r.json()
    assert (s["timezone"], s["chatJid"], s["contextMode"], s["enabled"]) == ("Asia/Tokyo", None, "isolated", True)
    # 09:00 in Tokyo is 00:00 UTC
    assert parse(s["nextRun"]).astimezone(dt.timezone.utc).hour == 0


@pytest.mark.parametrize("schedule, words", [
    ({"type": "cron", "value": "61 * * * *"}, "cron expression"),
    ({"type": "cron", "value": "0 9 * * * *"}, "5-field"),
    ({"type": "cron", "value": "0 0 30 2 *"}, "never matches"),
    ({"type": "interval", "value": 999}, "1000 ms"),
    ({"type": "interval", "value": 1500.5}, "integer"),
    ({"type": "interval", "value": "60000"}, "integer"),
    ({"type": "once", "value": "next tuesday"}, "ISO 8601"),
    ({"type": "once", "value": 1775000000}, "ISO 8601"),
])
async def test_bad_schedule_is_a_400_that_says_why_and_creates_nothing(reporting, schedule, words):
    assert words in (await refused(reporting, 400, schedule=schedule))["message"]


async def test_unknown_timezone_is_a_400(reporting):
    assert "timezone" in (await refused(reporting, 400, timezone="Mars/Olympus"))["message"]


@pytest.mark.parametrize("fields", [
    {"schedule": {"type": "weekly", "value": "x"}},
    {"contextMode": "shared"},
    {"prompt": ""},
    {"colour": "blue"},
])
async def test_malformed_body_is_a_400_envelope(reporting, fields):
    assert (await refused(reporting, 400, **fields))["code"] == "VALIDATION_ERROR"


async def test_unknown_group_is_a_404(reporting):
    assert "nobody" in (await refused(reporting, 404, group="nobody"))["message"]


async def test_bad_chat_jid_is_a_400(reporting):
    await refused(reporting, 400, chatJid="not a jid")


async def test_unknown_id_is_a_404_for_every_method(client):
    for method, path in [("GET", ""), ("PUT", ""), ("DELETE", ""), ("GET", "/logs")]:
        r = await client.request(method, f"/container/schedules/nope{path}", json={} if method == "PUT" else None)
        assert r.status_code == 404, (method, path)
        assert r.json()["error"]["code"] == "NOT_FOUND"


async def test_put_changes_fields_and_recomputes_next_run(reporting):
    s = (await reporting.post("/container/schedules", json=body(timezone="UTC"))).json()
    r = await reporting.put(f"/container/schedules/{s['id']}",
                            json={"prompt": "new prompt", "schedule": {"type": "interval", "value": 3_600_000},
                                  "contextMode": "group", "chatJid": "tg:43"})
    assert r.status_code == 200, r.text
    u = r.json()
    assert (u["prompt"], u["schedule"], u["contextMode"], u["chatJid"], u["name"]) == (
        "new prompt", {"type": "interval", "value": 3_600_000}, "group", "tg:43", "Daily Report")
    in_an_hour = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
    assert abs((parse(u["nextRun"]) - in_an_hour).total_seconds()) < 60
    assert u["updatedAt"] >= s["updatedAt"] and u["createdAt"] == s["createdAt"]
    assert (await reporting.get(f"/container/schedules/{s['id']}")).json() == u


async def test_put_accepts_a_schedule_as_read_back(reporting):
    s = (await reporting.post("/container/schedules", json=body())).json()
    r = await reporting.put(f"/container/schedules/{s['id']}", json=s | {"name": "Renamed"})
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "Renamed" and r.json()["nextRun"] == s["nextRun"]


async def test_put_enabled_false_pauses_and_true_resumes(reporting):
    s = (await reporting.post("/container/schedules", json=body())).json()
    paused = (await reporting.put(f"/container/schedules/{s['id']}", json={"enabled": False})).json()
    assert (paused["status"], paused["enabled"], paused["nextRun"]) == ("paused", False, None)
    resumed = (await reporting.put(f"/container/schedules/{s['id']}", json={"enabled": True})).json()
    assert (resumed["status"], resumed["enabled"], resumed["nextRun"]) == ("active", True, s["nextRun"])


async def test_bad_put_changes_nothing(reporting):
    s = (await reporting.post("/container/schedules", json=body())).json()
    for change, status in [({"schedule": {"type": "cron", "value": "nope"}}, 400),
                           ({"timezone": "Nowhere/Else"}, 400),
                           ({"group": "nobody"}, 404),
                           ({"id": "another-id"}, 400),
                           ({"enabled": "maybe"}, 400)]:
        r = await reporting.put(f"/container/schedules/{s['id']}", json=change | {"name": "changed"})
        assert r.status_code == status, (change, r.text)
    assert (await reporting.get(f"/container/schedules/{s['id']}")).json() == s


async def test_refused_mount_in_container_config_is_a_400(reporting):
    r = await reporting.post("/container/schedules", json=body(containerConfig={
        "additionalMounts": [{"hostPath": "/etc", "containerPath": "etc"}]}))
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "MOUNT_REFUSED"
    assert await listed(reporting) == []


async def test_delete_removes_the_schedule(reporting):
    s = (await reporting.post("/container/schedules", json=body())).json()
    r = await reporting.delete(f"/container/schedules/{s['id']}")
    assert r.status_code == 204
    assert (await reporting.get(f"/container/schedules/{s['id']}")).status_code == 404
    assert await listed(reporting) == []


async def test_deleting_the_namespace_deletes_its_schedules(reporting):
    await reporting.post("/container/schedules", json=body())
    assert (await reporting.delete("/container/namespaces/reporting")).status_code == 204
    assert await listed(reporting) == []


async def test_openapi_documents_the_schedule_endpoints(client):
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert set(paths["/api/v1/container/schedules"]) == {"get", "post"}
    assert set(paths["/api/v1/container/schedules/{schedule_id}"]) == {"get", "put", "delete"}
    assert "get" in paths["/api/v1/container/schedules/{schedule_id}/logs"]


START = unix(2026, 3, 6)


async def test_logs_page_newest_first_with_limit_and_offset(nursery, settings, autojump_clock):
    with trio.fail_after(120):
        srv = await start_server(nursery, settings, clock=Clock(start=START), offload=inline)
        supervisor = RecordingSupervisor(srv.services.clock, results=("x" * 300,))
        srv.services.scheduler.supervisor = supervisor
        client = srv.client
        await client.post("/container/namespaces", json={"name": "reporting"})
        s = (await client.post("/container/schedules",
                               json=body(schedule={"type": "interval", "value": 1000}))).json()
        await srv.services.clock.sleep_until(START + 25.5)
        await client.put(f"/container/schedules/{s['id']}", json={"enabled": False})
        default = (await client.get(f"/container/schedules/{s['id']}/logs")).json()
        tail = (await client.get(f"/container/schedules/{s['id']}/logs", params={"limit": 10, "offset": 20})).json()
        capped = (await client.get(f"/container/schedules/{s['id']}/logs", params={"limit": 100000})).json()
        bad = await client.get(f"/container/schedules/{s['id']}/logs", params={"limit": "many"})
        after = (await client.get(f"/container/schedules/{s['id']}")).json()
        await client.aclose()
    assert len(supervisor.received) == 25
    assert default["total"] == 25 and len(default["logs"]) == 20
    planned = [row["plannedAt"] for row in capped["logs"]]
    assert len(planned) == 25 and planned == sorted(planned, reverse=True)
    assert default["logs"] == capped["logs"][:20]
    assert tail["logs"] == capped["logs"][20:]
    newest = default["logs"][0]
    assert (newest["status"], newest["result"], newest["durationMs"], newest["runId"]) == (
        "success", "x" * 300, 1234, "run-25")
    assert after["lastResult"] == "x" * 200 and after["lastRun"] == newest["runAt"]
    assert bad.status_code == 400


async def test_the_list_is_paged_and_filtered_by_group(client):
    for name in ("alpha", "beta"):
        assert (await client.post("/container/namespaces", json={"name": name})).status_code == 201
    ids = []
    for i in range(5):
        r = await client.post("/container/schedules", json={
            "name": f"s{i}", "group": "alpha" if i < 3 else "beta", "prompt": "p",
            "schedule": {"type": "interval", "value": 60000}})
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    everything = (await client.get("/container/schedules")).json()
    assert everything["total"] == 5 and [s["id"] for s in everything["schedules"]] == ids
    page = (await client.get("/container/schedules", params={"limit": 2, "offset": 1})).json()
    assert page["total"] == 5 and [s["id"] for s in page["schedules"]] == ids[1:3]
    beta = (await client.get("/container/schedules", params={"group": "beta"})).json()
    assert beta["total"] == 2 and [s["id"] for s in beta["schedules"]] == ids[3:]
    assert (await client.get("/container/schedules", params={"limit": "many"})).status_code == 400
