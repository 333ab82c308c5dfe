"""What every chat platform does the same way, through the real server against each platform's
fake (Telegram, Slack, Discord, WhatsApp; the drivers are in channel_support.py): validate and
connect, keep secrets out of every answer, split long answers, wait out a rate limit, stop
promptly and cleanly, and answer a message end to end with the agent in Docker.

What only one platform does (long polling offsets, Socket Mode envelopes, Gateway heartbeats
and resumes, signed webhooks) is tested in that platform's own module.
"""
from __future__ import annotations

import json

import pytest
import trio

from channel_support import DRIVERS, stored, timed_server  # noqa: F401  (fixture)
from checks import assert_error
from conftest import start_server
from fakes.anthropic import serve_fake_anthropic, text_reply


def over(*names: str):
    """Run a case only for these platforms (the others cannot do what it needs)."""
    chosen = [d for d in DRIVERS if d.name in names]
    return pytest.mark.parametrize("driver", chosen, ids=[d.name for d in chosen], indirect=True)


@pytest.fixture(params=DRIVERS, ids=[d.name for d in DRIVERS])
def driver(request):
    return request.param


@pytest.fixture
async def fake(nursery, driver):
    return await driver.serve(nursery)


@pytest.fixture
def settings(tmp_path, driver, fake):
    return driver.settings(tmp_path, fake)


# -- validate / connect ---------------------------------------------------------------------------


async def test_validate_with_good_credentials_names_the_account_and_stores_nothing(server, driver, fake):
    answer = await server.client.post(f"/channels/{driver.name}/validate", json=driver.credentials)
    assert answer.status_code == 200
    assert answer.json() == {"valid": True, "accountName": driver.account, "message": f"Valid: {driver.account}"}
    assert await server.services.db.fetchall("SELECT * FROM channel_configs") == []
    assert (await server.client.get(f"/channels/{driver.name}")).json()["configured"] is False
    driver.after_validate(fake)


async def test_validate_with_bad_credentials_says_why(server, driver):
    credentials, reason = driver.bad_validate
    answer = await server.client.post(f"/channels/{driver.name}/validate", json=credentials)
    assert answer.status_code == 200
    assert answer.json() == {"valid": False, "accountName": None, "message": reason}


async def test_connect_with_bad_credentials_is_400_with_the_platforms_reason_and_stores_nothing(server, driver,
                                                                                                 fake):
    credentials, reasons = driver.bad_connect
    answer = await server.client.post(f"/channels/{driver.name}/connect", json=credentials)
    error = assert_error(answer, 400, "INVALID_CREDENTIALS")
    assert all(reason in error["message"] for reason in reasons), error
    assert all(secret not in answer.text for secret in credentials.values() if secret not in driver.masked.values())
    assert await server.services.db.fetchall("SELECT * FROM channel_configs") == []
    status = (await server.client.get(f"/channels/{driver.name}")).json()
    assert status["configured"] is False and status["statusMessage"] == "Not configured"
    listing = (await server.client.get("/channels")).json()["channels"]
    assert {"name": driver.name, "connected": False, "statusMessage": "Not configured"} in listing
    assert driver.opened(fake) == 0


async def test_connect_reports_the_account_and_masks_every_secret_everywhere(server, driver, fake):
    details = await driver.connect(server, fake)
    secrets = [value for key, value in driver.credentials.items() if driver.masked[key] != value]
    assert details["connected"] is True and details["accountName"] == driver.account
    assert details["statusMessage"] == f"Connected as {driver.account}"
    assert details["credentials"] == driver.masked
    assert not any(secret in json.dumps(details) for secret in secrets)
    for path in ("/channels", f"/channels/{driver.name}", "/container/audit-log"):
        answer = await server.client.get(path)
        assert answer.status_code == 200
        assert not any(secret in answer.text for secret in secrets), path
    listing = (await server.client.get("/channels")).json()["channels"]
    assert [c["name"] for c in listing] == ["telegram", "slack", "discord", "whatsapp"]
    assert {"name": driver.name, "connected": True, "statusMessage": f"Connected as {driver.account}"} in listing
    row = await server.services.db.fetchone("SELECT credentials, account FROM channel_configs WHERE name = ?",
                                            (driver.name,))
    assert not any(secret in row["credentials"] for secret in secrets) and row["account"] == driver.account
    driver.after_connect(fake)


async def test_a_connected_channel_comes_back_after_a_restart(nursery, settings, driver, fake):
    async with trio.open_nursery() as first_life:
        server = await start_server(first_life, settings)
        await driver.connect(server, fake)
        await server.client.aclose()
        first_life.cancel_scope.cancel()
    opened = driver.opened(fake)
    server = await start_server(nursery, settings)
    await driver.relinked(server, fake, opened)
    status = (await server.client.get(f"/channels/{driver.name}")).json()
    assert status["statusMessage"] == f"Connected as {driver.account}"
    await server.client.aclose()


@over("telegram", "slack", "discord")
async def test_a_link_the_platform_breaks_is_opened_again_and_messages_still_arrive(server, driver, fake):
    await driver.connect(server, fake)
    await driver.drop(fake)
    opened = driver.opened(fake)
    await driver.relinked(server, fake, opened)
    assert driver.opened(fake) == opened + 1
    text = await driver.push(server, fake, driver.group, "still here")
    assert [m["content"] for m in await stored(server, driver.jid(driver.group))] == [text]
    assert (await server.client.get(f"/channels/{driver.name}")).json()["connected"] is True


# -- inbound --------------------------------------------------------------------------------------


@over("telegram", "slack", "discord")
async def test_direct_messages_and_mentions_are_addressed_to_the_bot(server, driver, fake):
    await driver.connect(server, fake)
    chatting = await driver.push(server, fake, driver.group, "just chatting")
    mentioned = await driver.push(server, fake, driver.group, "hello", mention=True)
    direct = await driver.push(server, fake, driver.direct, "a direct message", direct=True)
    rows = await server.services.db.fetchall("SELECT chat_jid, content, addressed FROM messages ORDER BY id")
    group, dm = driver.jid(driver.group), driver.jid(driver.direct)
    assert [tuple(r) for r in rows] == [(group, chatting, 0), (group, mentioned, 1), (dm, direct, 1)]
    chats = (await server.client.get("/channels/chats", params={"channel": driver.name})).json()["chats"]
    assert {c["jid"]: c["isGroup"] for c in chats} == {group: True, dm: False}


# -- outbound -------------------------------------------------------------------------------------


async def test_a_long_answer_arrives_as_two_messages_and_is_stored_once(server, driver, fake):
    await driver.connect(server, fake)
    text = "\n".join(f"line {i:04d} " + "x" * 90 for i in range(driver.long_lines))
    assert driver.max_length < len(text) <= 2 * driver.max_length
    jid = driver.jid(driver.group)
    answer = await server.client.post("/channels/messages", json={"chatJid": jid, "content": text})
    assert answer.status_code == 201, answer.text
    sent = driver.sent(fake)
    assert [chat for chat, _ in sent] == [driver.group, driver.group]
    assert all(len(part) <= driver.max_length for _, part in sent)
    assert sent[0][1].endswith("x") and sent[1][1].startswith("line ")
    assert "\n".join(part for _, part in sent) == text
    assert [(m["content"], m["isFromBot"]) for m in await stored(server, jid)] == [(text, True)]


async def test_a_refused_send_is_a_502_not_retried_and_never_shows_a_secret(server, driver, fake):
    await driver.connect(server, fake)
    secret = next(value for key, value in driver.credentials.items() if driver.masked[key] != value)
    driver.refuse_send(fake, f"no such chat (you sent {secret})")
    jid = driver.jid(driver.group)
    answer = await server.client.post("/channels/messages", json={"chatJid": jid, "content": "hello"})
    error = assert_error(answer, 502)
    assert "no such chat (you sent ****)" in error["message"] and secret not in answer.text
    assert len(driver.send_times(fake)) == 1
    assert await stored(server, jid) == []
    audit = (await server.client.get("/container/audit-log", params={"severity": "error"})).json()["entries"]
    assert any("no such chat (you sent ****)" in e["message"] for e in audit)
    assert secret not in json.dumps(audit)


async def test_a_5xx_on_send_is_retried_with_backoff(timed_server, driver, fake, autojump_clock):
    with trio.fail_after(120):
        await driver.connect(timed_server, fake)
        driver.unavailable(fake, 2)
        answer = await timed_server.client.post("/channels/messages",
                                                json={"chatJid": driver.jid(driver.group), "content": "hello"})
    assert answer.status_code == 201, answer.text
    calls = driver.send_times(fake)
    assert len(calls) == 3
    assert calls[1] - calls[0] >= 0.5 and calls[2] - calls[1] >= 1
    assert driver.sent(fake) == [(driver.group, "hello")]


@over("telegram", "slack", "discord")
async def test_a_429_on_send_waits_for_retry_after(timed_server, driver, fake, autojump_clock):
    with trio.fail_after(120):
        await driver.connect(timed_server, fake)
        driver.fail_send(fake, driver.retry_after)
        started = trio.current_time()
        answer = await timed_server.client.post("/channels/messages",
                                                json={"chatJid": driver.jid(driver.group), "content": "hi"})
    assert answer.status_code == 201, answer.text
    first, second = driver.send_times(fake)
    assert driver.retry_after <= second - first < driver.retry_after + 1
    assert driver.retry_after <= trio.current_time() - started < driver.retry_after + 1
    assert driver.sent(fake) == [(driver.group, "hi")]


# -- stopping -------------------------------------------------------------------------------------


async def test_disconnect_stops_promptly_and_forgets_the_credentials(server, driver, fake):
    await driver.connect(server, fake)
    with trio.fail_after(1):
        answer = await server.client.post(f"/channels/{driver.name}/disconnect")
    assert answer.status_code == 200
    details = answer.json()
    assert details["connected"] is False and details["configured"] is False
    assert details["statusMessage"] == "Not configured" and details["credentials"] is None
    assert await server.services.db.fetchall("SELECT * FROM channel_configs") == []
    assert (await server.client.get(f"/channels/{driver.name}")).json()["statusMessage"] == "Not configured"
    await driver.closed_cleanly(fake)
    await driver.after_disconnect(server, fake)
    answer = await server.client.post("/channels/messages", json={"chatJid": driver.jid(driver.group), "content": "hi"})
    assert_error(answer, 409, "CHANNEL_NOT_CONNECTED")


async def test_server_shutdown_stops_the_channel_promptly_and_cleanly(tmp_path, driver, fake):
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, driver.settings(tmp_path, fake))
            await driver.connect(server, fake)
            await server.client.aclose()
            nursery.cancel_scope.cancel()
            cancelled_at = trio.current_time()
    assert trio.current_time() - cancelled_at < 1
    await driver.closed_cleanly(fake)


# -- end to end -----------------------------------------------------------------------------------


async def test_a_message_to_the_bot_is_answered_by_the_agent(nursery, tmp_path, driver, fake, docker_engine,
                                                             agent_image):
    llm = await nursery.start(serve_fake_anthropic)
    llm.queue(text_reply("Four, of course."))
    settings = driver.settings(tmp_path, fake, container_runtime="docker", container_network="host",
                               agent_image=agent_image)
    server = await start_server(nursery, settings)
    jid = driver.jid(driver.group)
    env = [f"ANTHROPIC_BASE_URL={llm.url}", "ANTHROPIC_API_KEY=x"]
    answer = await server.client.post("/container/namespaces", json={
        "name": "team", "chatJids": [jid], "containerConfig": {"env": env, "idleTimeoutSecs": 5}})
    assert answer.status_code == 201, answer.text
    await driver.connect(server, fake)
    await driver.push(server, fake, driver.group, "what is 2+2?", mention=driver.direct is not None)
    await fake.wait_for(lambda: driver.sent(fake), timeout=120)
    assert driver.sent(fake) == [(driver.group, "Four, of course.")]
    assert "what is 2+2?" in json.dumps(llm.messages_requests[0].body["messages"])
    history = (await server.client.get("/container/run-history", params={"group": "team"})).json()["runs"]
    assert len(history) == 1
    rows = await stored(server, jid, 2)
    assert rows[0]["isFromBot"] is True and rows[0]["content"] == "Four, of course."
    await server.client.aclose()
