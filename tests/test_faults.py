"""Fault injection: the server killed with SIGKILL at bad moments, the engine gone, the platform failing.

The kill tests run `nanoclaw serve` as a real subprocess (own data and config dirs,
port 0 on 127.0.0.1, real Docker with host networking, the agent image) and kill it
with SIGKILL, then start it again on the same dirs. The fakes (Telegram Bot API,
Anthropic API) run in the test's Trio loop on 127.0.0.1 and outlive the server.
The docker CLI the server runs is a wrapper script first on its PATH
(tests/fault_support.py) that forwards to the real CLI, or plays a stopped engine,
or holds `docker run` so a kill can land before a container starts; the machine's
real dockerd is never touched. Every container an instance started is removed by
label when the test ends.
"""
from __future__ import annotations

import contextlib
import itertools
import os
import re
import signal

import httpx
import pytest
import trio
from conftest import make_settings, start_server
from fakes.telegram import TOKEN
from fault_support import (
    CANNOT_CONNECT,
    Data,
    DockerSwitch,
    labelled_containers,
    poll,
    remove_labelled,
    serve_faulty_telegram,
    serve_gated_anthropic,
    server_env,
)
from serverproc import serve_process

from nanoclaw.clock import Clock

GROUP_CHAT = -1002468
JID = f"tg:{GROUP_CHAT}"
LLM_KEY = "sk-ant-faults-real-key"


# -- fixtures and helpers ------------------------------------------------------------


@pytest.fixture
def switch(tmp_path):
    return DockerSwitch(tmp_path / "bin")


@pytest.fixture
def containers_cleanup(tmp_path, switch):
    """Remove every container of this test's server instance, whatever happened."""
    yield
    switch.abort_held()
    switch.hold_runs(False)
    switch.down(False)
    import sqlite3

    db = tmp_path / "data" / "nanoclaw.db"
    if db.exists():
        conn = sqlite3.connect(db, timeout=10)
        try:
            row = conn.execute("SELECT value FROM settings WHERE key = 'instance_id'").fetchone()
        finally:
            conn.close()
        if row:
            remove_labelled(row[0])


class Life:
    """One `nanoclaw serve` process: its API client, and SIGKILL."""

    def __init__(self, process) -> None:
        self.process = process
        self.api = httpx.AsyncClient(base_url=process.url + "/api/v1", timeout=30)

    async def kill(self) -> None:
        self.process.process.send_signal(signal.SIGKILL)
        with trio.fail_after(10):
            code = await self.process.process.wait()
        assert code == -signal.SIGKILL, code
        await self.api.aclose()


@contextlib.asynccontextmanager
async def life(tmp_path, env, n: int):
    """The n-th `nanoclaw serve` on these dirs; its log is printed when the block fails."""
    async with serve_process(tmp_path, env=env, log_name=f"serve-{n}.log") as proc:
        try:
            yield proc
        except BaseException:
            print(f"--- log of server life {n} ({proc.url}) ---\n{proc.log()}")
            raise


async def setup_group(api: httpx.AsyncClient, llm_url: str | None, *, idle: int = 5,
                      via_proxy: bool = True) -> None:
    """A group for the chat whose agent reaches the fake LLM (through the credential proxy, or
    directly so the container does not depend on the server), Telegram connected."""
    if llm_url is not None:
        config: dict = {"idleTimeoutSecs": idle}
        if via_proxy:
            r = await api.post("/container/credential-proxy/mappings", json={
                "name": "anthropic", "upstreamUrl": llm_url, "credentialType": "api_key", "credential": LLM_KEY})
            assert r.status_code == 201, r.text
            r = await api.post("/container/credential-proxy/start")
            assert r.json()["running"] is True, r.text
        else:
            config["env"] = [f"ANTHROPIC_BASE_URL={llm_url}", f"ANTHROPIC_API_KEY={LLM_KEY}"]
        r = await api.post("/container/namespaces", json={"name": "family", "chatJids": [JID],
                                                          "containerConfig": config})
        assert r.status_code == 201, r.text
    r = await api.post("/channels/telegram/connect", json={"token": TOKEN})
    assert r.status_code == 200, r.text


async def runs_of(api, group: str = "family") -> list[dict]:
    r = await api.get("/container/run-history", params={"group": group, "limit": 100})
    assert r.status_code == 200, r.text
    return r.json()["runs"]


# -- (a) kill -9 while a container runs ------------------------------------------------


async def test_kill_during_a_container_run_leaves_no_orphan_and_the_group_is_retried(
        nursery, tmp_path, agent_image, switch, containers_cleanup):
    tg = await nursery.start(serve_faulty_telegram)
    llm = await nursery.start(serve_gated_anthropic)  # holds every answer until llm.gate is set
    env = server_env(tmp_path, switch=switch, telegram_url=tg.url, agent_image=agent_image)
    data = Data(tmp_path / "data")

    with trio.fail_after(150):
        async with life(tmp_path, env, 1) as proc:
            first = Life(proc)
            # The agent talks to the LLM directly: its container does not die with the server's proxy.
            await setup_group(first.api, llm.url, via_proxy=False)
            tg.push_message(GROUP_CHAT, "@Andy what is 2+2?")
            # The agent in its container has asked the LLM: the run is live, no answer can exist yet.
            await llm.wait_for_requests(1)
            [run] = await runs_of(first.api)
            assert run["status"] == "running"
            instance = await data.instance_id()
            assert labelled_containers(instance, all_states=False) == [run["containerName"]]
            await first.kill()

        # The container outlived the server (its agent still waits for the LLM): an orphan.
        assert labelled_containers(instance, all_states=False) == [run["containerName"]]
        assert tg.sent == []

        async with life(tmp_path, env, 2) as proc:
            second = Life(proc)
            # Orphans go before the server answers at all.
            assert run["containerName"] not in labelled_containers(instance)
            llm.gate.set()
            await tg.wait_for(lambda: len(tg.sent) >= 1, timeout=60)

            async def retried_run_done():
                runs = await runs_of(second.api)
                return runs if len(runs) == 2 and runs[0]["status"] not in ("running",) else None

            retried, interrupted = await poll(retried_run_done, timeout=30, what="the retried run ends")
            audit = (await second.api.get("/container/audit-log", params={"limit": 500})).json()["entries"]
            await second.api.aclose()

    assert (interrupted["runId"], interrupted["status"]) == (run["runId"], "interrupted")
    assert interrupted["error"] == "the server stopped during this run"
    assert (retried["kind"], retried["status"], retried["results"]) == ("message", "success", ["2+2 = 4"])
    assert retried["containerName"] != run["containerName"]
    # The answer reached the chat exactly once; the LLM was asked once per life.
    assert tg.sent == [{"chat_id": str(GROUP_CHAT), "text": "2+2 = 4"}]
    assert len(llm.messages_requests) == 2
    assert any(e["message"] == "removed 1 orphan container(s)"
               and e["details"]["containers"] == [run["containerName"]] for e in audit), audit
    assert labelled_containers(instance, all_states=False) == []


# -- (b) kill -9 between nextRun advance and the run -------------------------------------


async def test_kill_between_next_run_advance_and_the_run_does_not_run_the_slot_twice(
        nursery, tmp_path, agent_image, switch, containers_cleanup):
    tg = await nursery.start(serve_faulty_telegram)
    llm = await nursery.start(serve_gated_anthropic)
    llm.gate.set()
    env = server_env(tmp_path, switch=switch, telegram_url=tg.url, agent_image=agent_image)
    data = Data(tmp_path / "data")
    interval_ms = 6000

    with trio.fail_after(150):
        async with life(tmp_path, env, 1) as proc:
            first = Life(proc)
            await setup_group(first.api, llm.url)
            # `docker run` is held: the run is handed over but its container does not start.
            switch.hold_runs()
            r = await first.api.post("/container/schedules", json={
                "name": "sum", "group": "family", "prompt": "what is 6*7?",
                "schedule": {"type": "interval", "value": interval_ms}, "contextMode": "isolated"})
            assert r.status_code == 201, r.text
            schedule_id = r.json()["id"]

            async def handed_over():
                return switch.held and await data.rows(
                    "SELECT * FROM schedule_logs WHERE schedule_id = ? AND status = 'running'", schedule_id)

            [slot] = await poll(handed_over, timeout=30, what="the first slot reaches `docker run`")
            [row] = await data.rows("SELECT next_run_ms FROM schedules WHERE id = ?", schedule_id)
            assert row["next_run_ms"] == slot["planned_ms"] + interval_ms  # advanced before the hand-off
            await first.kill()

        # The held `docker run` gives up instead of starting a container nobody watches.
        switch.abort_held()
        switch.hold_runs(False)

        async with life(tmp_path, env, 2) as proc:
            second = Life(proc)

            async def a_later_slot_ran():
                logs = (await second.api.get(f"/container/schedules/{schedule_id}/logs")).json()["logs"]
                return logs if any(log["status"] == "success" for log in logs) else None

            await poll(a_later_slot_ran, timeout=45, what="the next slot runs after the restart")
            r = await second.api.put(f"/container/schedules/{schedule_id}", json={"enabled": False})
            assert r.status_code == 200, r.text
            await poll(lambda: _no_running_log(second.api, schedule_id), timeout=30, what="runs settle")
            logs = (await second.api.get(f"/container/schedules/{schedule_id}/logs",
                                         params={"limit": 500})).json()["logs"]
            runs = await runs_of(second.api)
            await second.api.aclose()

    logs.reverse()  # oldest first
    killed = [log for log in logs if log["id"] == slot["id"]]
    assert [(log["status"], log["error"]) for log in killed] == [
        ("error", "the server stopped before the run finished")]
    planned = [log["plannedAt"] for log in logs]
    assert len(planned) == len(set(planned)), f"a slot was logged twice: {logs}"
    assert planned.count(killed[0]["plannedAt"]) == 1
    later = [log for log in logs if log["id"] != slot["id"]]
    assert later and all(log["plannedAt"] > killed[0]["plannedAt"] for log in later)
    ran = [log for log in later if log["status"] == "success"]
    # The killed slot's run never reached the LLM or the chat; each later run did once.
    assert len(llm.messages_requests) == len(ran)
    assert tg.sent == [{"chat_id": str(GROUP_CHAT), "text": "6*7 = 42"}] * len(ran)
    by_id = {run["runId"]: run for run in runs}
    assert by_id[killed[0]["runId"]]["status"] == "interrupted"
    assert all(by_id[log["runId"]]["status"] == "success" for log in ran)


async def _no_running_log(api, schedule_id: str) -> bool:
    logs = (await api.get(f"/container/schedules/{schedule_id}/logs")).json()["logs"]
    return not any(log["status"] == "running" for log in logs)


# -- (c) kill -9 after an update is stored, before its offset is committed -----------------


async def test_kill_after_an_update_is_stored_before_the_offset_is_committed(
        nursery, tmp_path, agent_image, switch, containers_cleanup):
    """The adapter stores a message, then saves the offset in a second transaction a few
    microseconds later; no outside hook can stop it in between. So the test kills it once
    the message row exists (the fake holds the next getUpdates before reading its offset,
    so Telegram has not seen the confirmation either), and then puts the saved offset back
    to what it was before the update: exactly the state on disk that a crash between the
    two transactions leaves. Telegram then delivers the update again after the restart."""
    tg = await nursery.start(serve_faulty_telegram)
    env = server_env(tmp_path, switch=switch, telegram_url=tg.url, agent_image=agent_image)
    data = Data(tmp_path / "data")

    with trio.fail_after(90):
        async with life(tmp_path, env, 1) as proc:
            first = Life(proc)
            await setup_group(first.api, None)
            warm = tg.push_message(GROUP_CHAT, "before the crash")
            await tg.wait_for(lambda: tg.confirmed > warm["update_id"], timeout=30)
            [offset_before] = await data.rows(
                "SELECT value FROM channel_state WHERE channel = 'telegram' AND key = 'offset'")

            tg.hold_polls()
            update = tg.push_message(GROUP_CHAT, "stored, offset not committed")
            await tg.wait_for(lambda: tg.polls_held >= 1, timeout=30)
            stored = await data.rows("SELECT id FROM messages WHERE channel = 'telegram' AND external_id LIKE ?",
                                     f"%{update['message']['message_id']}")
            assert len(stored) == 1
            await first.kill()

        [committed] = await data.rows(
            "SELECT value FROM channel_state WHERE channel = 'telegram' AND key = 'offset'")
        assert int(committed[0]) == update["update_id"] + 1  # the server did commit it, microseconds later

        assert tg.confirmed == update["update_id"]  # Telegram still holds the update
        await data.write("UPDATE channel_state SET value = ? WHERE channel = 'telegram' AND key = 'offset'",
                         offset_before[0])
        during = tg.push_message(GROUP_CHAT, "sent while the server was down")
        tg.release_polls()

        async with life(tmp_path, env, 2) as proc:
            second = Life(proc)
            await tg.wait_for(lambda: tg.confirmed > during["update_id"], timeout=30)
            restart_polls = [c for c in tg.calls_of("getUpdates") if c.params.get("offset") == update["update_id"]]
            messages = (await second.api.get(f"/channels/chats/{JID}/messages")).json()["messages"]
            await second.api.aclose()

    # The update was delivered again after the restart, and stored only once.
    assert restart_polls, "the restarted server did not ask for the uncommitted update again"
    assert sorted(m["content"] for m in messages) == sorted(
        ["before the crash", "stored, offset not committed", "sent while the server was down"])
    rows = await data.rows("SELECT external_id, COUNT(*) AS n FROM messages GROUP BY external_id")
    assert all(r["n"] == 1 for r in rows) and len(rows) == 3


# -- (d) kill -9 during instructions writes ------------------------------------------------


async def test_kill_during_instructions_writes_leaves_a_complete_file(
        nursery, tmp_path, agent_image, switch, containers_cleanup):
    """Four clients PUT 300,000-character instructions as fast as they can; the server is
    killed (three times) the moment a write's temporary file appears. The file on disk and
    what the next life serves must be one complete version, and no temporary may remain."""
    tg = await nursery.start(serve_faulty_telegram)
    env = server_env(tmp_path, switch=switch, telegram_url=tg.url, agent_image=agent_image)
    folder = tmp_path / "data" / "groups" / "notes"
    claude = folder / "CLAUDE.md"
    versions: set[str] = set()

    def body(tag: str) -> str:
        line = f"{tag}: " + "abcdefghij" * 9 + "\n"
        text = line * (300_000 // len(line))
        versions.add(text)
        return text

    kills = caught_mid_write = 0
    with trio.fail_after(120):
        for n in range(1, 5):
            async with life(tmp_path, env, n) as proc:
                current = Life(proc)
                if n == 1:
                    r = await current.api.post("/container/namespaces", json={"name": "notes"})
                    assert r.status_code == 201, r.text
                    r = await current.api.put("/container/namespaces/notes/instructions",
                                              json={"instructions": body("v0")})
                    assert r.status_code == 200, r.text
                else:
                    answer = (await current.api.get("/container/namespaces/notes/instructions")).json()
                    assert answer["instructions"] in versions, "the API serves a half-written CLAUDE.md"
                    assert claude.read_text() == answer["instructions"]
                if n == 4:
                    await current.api.aclose()
                    break
                done = 0

                async def hammer(client_no: int, base_url, n: int) -> None:
                    nonlocal done
                    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
                        for i in range(10_000):
                            try:
                                r = await client.put("/container/namespaces/notes/instructions", json={
                                    "instructions": body(f"life {n} client {client_no} #{i}")})
                            except httpx.TransportError:
                                return  # the server was killed under this request
                            assert r.status_code == 200, r.text
                            done += 1

                async with trio.open_nursery() as clients:
                    for c in range(4):
                        clients.start_soon(hammer, c, current.api.base_url, n)
                    while done < 4:
                        await trio.sleep(0.01)
                    # Kill the moment a write is under way (its temporary exists), or after 10 s.
                    with trio.move_on_after(10):
                        while not any(name.endswith(".tmp") for name in os.listdir(folder)):
                            await trio.sleep(0.001)
                    await current.kill()
                    kills += 1
                    clients.cancel_scope.cancel()
                # Server down: the file on disk is one complete version.
                assert claude.read_text() in versions, "CLAUDE.md is half-written after SIGKILL"
                caught_mid_write += sum(1 for p in folder.iterdir() if p.name.endswith(".tmp"))

    assert kills == 3
    # A kill mid-write leaves write_atomic's temporary; the next start removes it (the group
    # folder is mounted into the agent's container, so it must not linger there).
    assert caught_mid_write >= 1, "no kill landed during a write"
    print(f"temporaries left by {kills} kills: {caught_mid_write}")
    leftovers = [p.name for p in folder.iterdir() if p.name != "CLAUDE.md"]
    assert leftovers == [], f"temporary files left in the group folder after a restart: {leftovers}"


# -- the container engine stops while the server runs -----------------------------------------


async def test_engine_down_gives_clear_errors_and_runs_resume_once_it_is_back(
        nursery, tmp_path, agent_image, switch, containers_cleanup):
    """The wrapper `docker` answers "Cannot connect to the Docker daemon" while `down` exists.
    A message run fails with that error and is retried with the supervisor's backoff (5 s first);
    the watchdog reports the runtime unavailable, and once the engine answers again the retry
    delivers the answer."""
    tg = await nursery.start(serve_faulty_telegram)
    llm = await nursery.start(serve_gated_anthropic)
    llm.gate.set()
    env = server_env(tmp_path, switch=switch, telegram_url=tg.url, agent_image=agent_image)

    with trio.fail_after(120):
        async with life(tmp_path, env, 1) as proc:
            server = Life(proc)
            api = server.api
            await setup_group(api, llm.url)
            assert (await api.get("/container/runtime")).json()["available"] is True

            switch.down()
            tg.push_message(GROUP_CHAT, "@Andy what is 2+2?")

            async def failed_run():
                runs = await runs_of(api)
                return runs[0] if runs and runs[0]["status"] == "error" else None

            failed = await poll(failed_run, timeout=30, what="the run fails")
            assert CANNOT_CONNECT in failed["error"], failed

            async def reported_down():
                info = (await api.get("/container/runtime")).json()
                return info if info["available"] is False else None

            info = await poll(reported_down, timeout=15, what="GET /container/runtime reports unavailable")
            assert "Cannot connect to the Docker daemon" in info["message"], info

            # An on-demand run while the engine is down fails at once, saying why.
            r = await api.post("/container/runs", json={"group": "family", "prompt": "what is 1+1?"})
            assert r.status_code in (202, 503), r.text
            if r.status_code == 202:
                run_id = r.json()["runId"]

                async def adhoc_done():
                    run = (await api.get(f"/container/runs/{run_id}")).json()
                    return run if run["status"] not in ("queued", "running") else None

                adhoc = await poll(adhoc_done, timeout=30, what="the on-demand run ends")
                assert adhoc["status"] == "error" and "Cannot connect to the Docker daemon" in adhoc["error"], adhoc
            else:
                assert "Cannot connect to the Docker daemon" in r.text

            switch.down(False)

            async def reported_up():
                return (await api.get("/container/runtime")).json()["available"]

            await poll(reported_up, timeout=30, what="GET /container/runtime reports available again")
            await tg.wait_for(lambda: len(tg.sent) >= 1, timeout=60)
            runs = await runs_of(api)
            audit = (await api.get("/container/audit-log", params={"limit": 500})).json()["entries"]
            await api.aclose()

    assert tg.sent == [{"chat_id": str(GROUP_CHAT), "text": "2+2 = 4"}]
    message_runs = [run for run in reversed(runs) if run["kind"] == "message"]
    assert message_runs[0]["status"] == "error" and message_runs[-1]["results"] == ["2+2 = 4"]
    assert any(re.search(r"retry 1 in 5 s", e["message"]) for e in audit), [e["message"] for e in audit]


# -- the platform answers 500 for a minute ---------------------------------------------


async def inline(fn, *args):
    return fn(*args)


async def test_telegram_answering_500_for_a_minute_backs_off_and_recovers(nursery, tmp_path, autojump_clock):
    """In-process under autojump_clock (the store offloaded inline), so the minute of 500s
    costs no real time; the fake and the server share the mock clock."""
    tg = await nursery.start(serve_faulty_telegram)
    server = await start_server(nursery, make_settings(tmp_path, telegram_api_base=tg.url),
                                clock=Clock(start=1_700_000_000), offload=inline)
    client = server.client
    r = await client.post("/channels/telegram/connect", json={"token": TOKEN})
    assert r.status_code == 200, r.text
    before = tg.push_message(GROUP_CHAT, "before the outage")
    await tg.wait_for(lambda: tg.confirmed > before["update_id"])

    start = trio.current_time()
    tg.outage_until = start + 60
    tg.push_message(GROUP_CHAT, "ends the poll in flight")  # the poll in flight returns; the next gets 500
    await tg.wait_for(lambda: len(tg.outage_answers) >= 1, timeout=60)
    during = [tg.push_message(GROUP_CHAT, f"during the outage {i}") for i in range(3)]

    statuses = []
    while trio.current_time() < start + 59:
        details = (await client.get("/channels/telegram")).json()
        statuses.append(details["statusMessage"])
        assert (await client.get("/health")).status_code == 200
        await trio.sleep(5)
    assert "Reconnecting: 500 Internal Server Error" in statuses, statuses

    await tg.wait_for(lambda: tg.confirmed > during[-1]["update_id"], timeout=300)
    recovered = trio.current_time()
    details = (await client.get("/channels/telegram")).json()
    assert (details["connected"], details["statusMessage"]) == (True, "Connected as @andy_test_bot")

    # Backoff: the failed polls were spaced out (exponential with jitter), not a hot loop.
    answers = tg.outage_answers
    gaps = [b - a for a, b in itertools.pairwise(answers)]
    assert 4 <= len(answers) <= 9, answers
    for attempt, gap in enumerate(gaps):
        assert 0.5 * 2 ** attempt <= gap <= 2 ** attempt + 0.01, gaps
    print(f"500 answers at t+{[round(a - start, 2) for a in answers]} s; recovered at "
          f"t+{round(recovered - start, 2)} s")
    messages = (await client.get(f"/channels/chats/{JID}/messages")).json()["messages"]
    contents = sorted(m["content"] for m in messages)
    assert contents == sorted(["before the outage", "ends the poll in flight",
                               *(f"during the outage {i}" for i in range(3))])
    await client.aclose()
