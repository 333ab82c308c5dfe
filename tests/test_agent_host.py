"""The host side of the agent (issue 13): its config, tokens counted, budgets, /new, and
runs that do not block chats. Under autojump_clock with the fake engine (fake_runtime.py)."""
from __future__ import annotations

import datetime as dt

import pytest
import trio

from conftest import make_settings, start_server
from fake_runtime import FakeRuntime
from nanoclaw.clock import Clock
from nanoclaw.config import ConfigError, load_settings
from nanoclaw.services import build
from nanoclaw.supervisor import RunSink, Work
from nanoclaw.proxy import month_start
from test_supervisor_queue import START, ListMessages, env, inline, make_groups, message, task_work  # noqa: F401  (env: fixture)

SPENT_100 = {"inputTokens": 200, "outputTokens": 20, "cacheReadTokens": 10, "cacheCreationTokens": 2,
             "totalTokens": 232}
SPENT_1000 = {"inputTokens": 2000, "outputTokens": 200, "cacheReadTokens": 10, "cacheCreationTokens": 2,
              "totalTokens": 2212}
NOTHING = {"inputTokens": 0, "outputTokens": 0, "cacheReadTokens": 0, "cacheCreationTokens": 0, "totalTokens": 0}


@pytest.fixture
async def fake_server(nursery, tmp_path):
    return await start_server(nursery, make_settings(tmp_path), clock=Clock(start=START), offload=inline,
                              runtime=FakeRuntime(nursery))


async def session_row(services, group: str):
    row = await services.db.fetchone("SELECT session_id FROM group_sessions WHERE group_name = ?", (group,))
    return row[0] if row else None


# -- tokens counted ---------------------------------------------------------------


async def test_usage_of_every_turn_is_summed_into_runs_history_and_analytics(fake_server, autojump_clock):
    client = fake_server.client
    for name in ("a", "b"):
        await client.post("/container/namespaces", json={"name": name})
    spent_a = (await client.post("/container/runs", json={"group": "a", "prompt": "spend 100"})).json()["runId"]
    spent_b = (await client.post("/container/runs", json={"group": "b", "prompt": "spend 1000"})).json()["runId"]
    plain = (await client.post("/container/runs", json={"group": "a", "prompt": "once 0"})).json()["runId"]
    await trio.sleep(5)
    run = (await client.get(f"/container/runs/{spent_a}")).json()
    assert run["status"] == "success" and run["results"] == ["part 1", "part 2"]
    assert run["usage"] == SPENT_100 and run["model"] == "fake-model"
    runs = {r["runId"]: r for r in (await client.get("/container/run-history")).json()["runs"]}
    assert runs[spent_b]["usage"] == SPENT_1000 and runs[spent_b]["model"] == "fake-model"
    assert runs[plain]["usage"] == NOTHING and runs[plain]["model"] is None

    analytics = (await client.get("/container/analytics")).json()
    day = dt.datetime.fromtimestamp(START, dt.timezone.utc).date().isoformat()
    assert [(d["date"], d["runs"], d["usage"]["totalTokens"]) for d in analytics["runsPerDay"]] == [(day, 3, 2444)]
    assert analytics["tokensPerGroup"] == [
        {"group": "b", "runs": 1, "usage": SPENT_1000},
        {"group": "a", "runs": 2, "usage": SPENT_100},
    ]
    assert analytics["usage"]["totalTokens"] == 2444 and analytics["usage"]["inputTokens"] == 2200


async def test_the_finished_event_carries_the_runs_usage(env, autojump_clock):
    await make_groups(env, "ev")
    events = []
    env.supervisor.subscribe(events.append)
    handle = await env.supervisor.submit("ev", Work("spend 100"))
    with trio.fail_after(30):
        await handle.wait()
    finished = events[-1]
    assert finished.type == "finished"
    assert finished.data["usage"] == SPENT_100 and finished.data["model"] == "fake-model"


# -- monthly budget ---------------------------------------------------------------


async def metered(env, group, tokens):
    """What the credential proxy records from the upstream's answers (tests/test_proxy_meter.py)."""
    await env.db.execute("INSERT INTO metered_usage (group_name, mapping, ts, input_tokens) VALUES (?, 'm', ?, ?)",
                         (group, env.clock.now(), tokens))


async def test_a_group_past_its_monthly_budget_is_refused_in_the_chat_and_the_record(env, autojump_clock):
    await make_groups(env, "thrifty", agent={"monthlyTokenBudget": 200})
    first = await env.supervisor.submit("thrifty", Work("spend 100"))  # under budget when it starts
    with trio.fail_after(30):
        assert (await first.wait()).status == "success"
    await metered(env, "thrifty", 232)
    message(env, "thrifty", "once 1")
    await trio.sleep(120)  # long enough for any retry to have happened
    assert len(env.runtime_fake.containers) == 1  # the refused run started no container
    [(chat, text)] = env.messages.sent
    assert chat == "tg:thrifty"
    assert "used 232 metered tokens this month" in text and "monthly token budget is 200" in text
    assert "2027-02-01" in text
    row = await env.db.fetchone("SELECT status, error FROM run_history WHERE kind = 'message'")
    assert row["status"] == "error" and row["error"] == text
    assert env.messages.cursor["thrifty"] == 1  # answered (with the refusal): not replayed


async def test_other_groups_and_unbudgeted_groups_are_not_refused(env, autojump_clock):
    await make_groups(env, "open")
    await make_groups(env, "capped", agent={"monthlyTokenBudget": 10_000})
    for group in ("open", "open", "capped", "capped"):
        handle = await env.supervisor.submit(group, Work("spend 1000"))
        with trio.fail_after(30):
            assert (await handle.wait()).status == "success"


def test_a_month_starts_on_the_first_at_midnight_utc():
    start, following = month_start(dt.datetime(2026, 12, 31, 23, 59, tzinfo=dt.timezone.utc).timestamp())
    assert start == dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc).timestamp()
    assert following == "2027-01-01"
    assert month_start(dt.datetime(2027, 2, 1, tzinfo=dt.timezone.utc).timestamp())[1] == "2027-03-01"


# -- /new -------------------------------------------------------------------------


async def test_new_drops_the_session_closes_its_container_and_confirms(env, autojump_clock):
    await make_groups(env, "chat", idleTimeoutSecs=600)
    message(env, "chat", "work 1")
    await trio.sleep(3)
    first = env.runtime_fake.containers[0]
    assert first.stdin["sessionId"] is None  # no session yet: the runner starts one and names it
    assert await session_row(env, "chat") == first.session
    await env.supervisor.new_session("chat")  # the chat's confirmation: test_channels.py
    await trio.sleep(1)
    assert first.ended_at is not None and first.ended_at < 5 and not first.stopped  # not after 600 s
    assert await session_row(env, "chat") is None
    for text in ("once 1", "once 2"):
        message(env, "chat", text)
        await trio.sleep(3)
    _, second, third = env.runtime_fake.containers
    assert second.stdin["sessionId"] is None  # a fresh session after /new
    assert second.session != first.session
    assert third.stdin["sessionId"] == second.session  # which the group then continues
    assert await session_row(env, "chat") == second.session
    rows = await env.db.fetchall("SELECT session_id FROM run_history ORDER BY started_at")
    assert [r[0] for r in rows] == [first.session, second.session, second.session]
    assert env.messages.sent[-1] == ("tg:chat", "done: once 2")


# -- runs that do not block chats ---------------------------------------------------


async def test_two_on_demand_runs_in_a_row_finish_at_once_each_in_its_own_session(env, autojump_clock):
    await make_groups(env, "ops", idleTimeoutSecs=300)
    message(env, "ops", "once 0")  # the group's own session exists
    await trio.sleep(1)
    group_session = await session_row(env, "ops")
    started = trio.current_time()
    handles = [await env.supervisor.submit("ops", Work("work 1")) for _ in range(2)]
    with trio.fail_after(10):
        outcomes = [await h.wait() for h in handles]
    assert [o.status for o in outcomes] == ["success", "success"]
    assert trio.current_time() - started < 5  # not 2 x 300 s of idle timeout
    _, one, two = env.runtime_fake.containers
    assert not one.stopped and not two.stopped and one.exit_code == two.exit_code == 0
    sessions = {one.stdin["sessionId"], two.stdin["sessionId"], group_session}
    assert len(sessions) == 3
    assert await session_row(env, "ops") == group_session  # untouched by on-demand runs
    named = await env.supervisor.submit("ops", Work("once 0", session_id=one.stdin["sessionId"]))
    with trio.fail_after(10):
        await named.wait()
    assert env.runtime_fake.containers[-1].stdin["sessionId"] == one.stdin["sessionId"]


async def test_a_chat_message_waits_for_an_on_demand_answer_not_an_idle_timeout(env, autojump_clock):
    await make_groups(env, "ops", idleTimeoutSecs=300)
    await env.supervisor.submit("ops", Work("work 5"))
    await trio.sleep(1)
    message(env, "ops", "once 1")
    await trio.sleep(10)
    assert env.messages.sent == [("tg:ops", "done: once 1")]
    adhoc, chat = env.runtime_fake.containers
    assert adhoc.ended_at < 6 and chat.started_at >= adhoc.ended_at and chat.ended_at < 8


class Chats(ListMessages):
    """Messages of several chats of one group, taken one at a time in arrival order."""

    def __init__(self) -> None:
        super().__init__()
        self.items: list[tuple[str, str]] = []

    def chat(self, group):
        return self.items[self.cursor.get(group, 0)][0]

    def _batch(self, group):
        taken = self.cursor.get(group, 0)
        return (self.items[taken][1], taken + 1) if taken < len(self.items) else None


async def test_another_chats_message_closes_an_idle_container_at_once(env, autojump_clock):
    await make_groups(env, "team", idleTimeoutSecs=600)
    chats = env.supervisor.feed = Chats()
    chats.items.append(("tg:a", "work 1"))
    env.supervisor.notify("team")
    await trio.sleep(3)
    chats.items.append(("tg:b", "once 1"))
    env.supervisor.notify("team")
    await trio.sleep(5)
    assert chats.sent == [("tg:a", "done: work 1"), ("tg:b", "done: once 1")]
    first, second = env.runtime_fake.containers
    assert first.ended_at < 4 and not first.stopped
    assert first.outputs == ["done: work 1"]  # b's message was not piped into a's container


async def test_interim_messages_reach_the_chat_before_the_answer(env, autojump_clock):
    await env.namespaces.create({"name": "ops", "chatJids": ["tg:ops"]})
    message(env, "ops", "tell working on it")
    await trio.sleep(2)
    assert env.messages.sent[:2] == [("tg:ops", "working on it"), ("tg:ops", "done: tell working on it")]


# -- the agent config ---------------------------------------------------------------


async def test_the_runner_is_told_the_agent_config_merged_over_server_defaults(nursery, tmp_path, autojump_clock):
    runtime = FakeRuntime(nursery)
    settings = make_settings(tmp_path, agent_provider="openai", agent_model="llama3.1")
    services = build(settings, clock=Clock(start=START), offload=inline, runtime=runtime)
    await nursery.start(services.serve)
    await make_groups(services, "plain")
    await make_groups(services, "custom", agent={
        "model": "qwen3", "mapping": "ollama", "maxSteps": 5, "vision": False, "monthlyTokenBudget": 10**6,
        "mcpServers": {"files": {"command": "mcp-files", "args": ["--ro"]}, "web": {"url": "http://127.0.0.1:9/mcp"}}})
    await make_groups(services, "claude", agent={"provider": "anthropic", "maxContextTokens": 50_000})
    for group in ("plain", "custom", "claude"):
        handle = await services.supervisor.submit(group, Work("once 0"))
        with trio.fail_after(10):
            await handle.wait()
    plain, custom, claude = (c.stdin["agent"] for c in runtime.containers)
    assert plain == {"provider": "openai", "model": "llama3.1", "mapping": "openai", "maxSteps": 50,
                     "maxTokens": 8192, "maxContextTokens": 100_000, "vision": True, "mcpServers": {}}
    assert custom == plain | {"model": "qwen3", "mapping": "ollama", "maxSteps": 5, "vision": False, "mcpServers": {
        "files": {"command": "mcp-files", "args": ["--ro"], "env": {}}, "web": {"url": "http://127.0.0.1:9/mcp"}}}
    assert claude == plain | {"provider": "anthropic", "model": "claude-sonnet-4-5", "mapping": "anthropic",
                              "maxContextTokens": 50_000}


@pytest.mark.parametrize("agent", [
    {"provider": "gemini"},
    {"maxSteps": 0},
    {"maxTokens": -1},
    {"monthlyTokenBudget": 0},
    {"temperature": 0.5},
    {"mapping": "-bad"},
    {"mcpServers": {"x": {"url": "ftp://example.com"}}},
    {"mcpServers": {"bad name": {"command": "x"}}},
    {"mcpServers": {"x": {"command": "x", "url": "http://example.com"}}},
    {"mcpServers": {"x": {"command": "x", "env": {"1BAD": "v"}}}},
    {"provider": "openai"},  # no model: the server's default model is for anthropic
])
async def test_an_invalid_agent_config_is_refused_with_400(fake_server, agent):
    client = fake_server.client
    r = await client.post("/container/namespaces", json={"name": "bad", "containerConfig": {"agent": agent}})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert "agent" in r.text
    assert (await client.get("/container/namespaces/bad")).status_code == 404
    await client.post("/container/namespaces", json={"name": "good"})
    r = await client.put("/container/namespaces/good", json={"containerConfig": {"agent": agent}})
    assert r.status_code == 400
    assert (await client.get("/container/namespaces/good")).json()["containerConfig"]["agent"] is None


async def test_a_valid_agent_config_is_stored_and_shown(fake_server):
    client = fake_server.client
    agent = {"provider": "openai", "model": "gpt-4.1-mini", "monthlyTokenBudget": 500_000,
             "mcpServers": {"web": {"url": "https://mcp.example.com/sse"}}}
    r = await client.post("/container/namespaces", json={"name": "ok", "containerConfig": {"agent": agent}})
    assert r.status_code == 201, r.text
    shown = (await client.get("/container/namespaces/ok")).json()["containerConfig"]["agent"]
    assert shown["model"] == "gpt-4.1-mini" and shown["maxSteps"] == 50 and shown["monthlyTokenBudget"] == 500_000
    assert shown["mcpServers"] == {"web": {"url": "https://mcp.example.com/sse"}}


async def test_an_on_demand_session_id_must_be_a_session_id(fake_server):
    client = fake_server.client
    await client.post("/container/namespaces", json={"name": "a"})
    r = await client.post("/container/runs", json={"group": "a", "prompt": "hi", "sessionId": "../etc"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "VALIDATION_ERROR"


def test_server_defaults_come_from_the_environment():
    settings = load_settings({"NANOCLAW_AGENT_PROVIDER": "openai", "NANOCLAW_AGENT_MODEL": "llama3.1"})
    assert (settings.agent_provider, settings.agent_model) == ("openai", "llama3.1")
    assert load_settings({}).agent_provider == "anthropic"
    with pytest.raises(ConfigError, match="NANOCLAW_AGENT_PROVIDER"):
        load_settings({"NANOCLAW_AGENT_PROVIDER": "gemini"})


async def test_a_scheduled_task_past_the_budget_tells_the_schedules_chat(env, autojump_clock):
    await make_groups(env, "nightly", agent={"monthlyTokenBudget": 100})
    await metered(env, "nightly", 100)
    told = []

    class Told(RunSink):
        async def result(self, run, text):
            told.append(text)

    task = await env.supervisor.submit("nightly", task_work("once 1", sink=Told()))
    with trio.fail_after(30):
        outcome = await task.wait()
    assert outcome.status == "error" and "monthly token budget is 100" in outcome.error
    assert told == [outcome.error]
    assert len(env.runtime_fake.containers) == 0


async def test_without_any_model_for_its_provider_a_run_fails_saying_so(nursery, tmp_path, autojump_clock):
    runtime = FakeRuntime(nursery)
    services = build(make_settings(tmp_path, agent_provider="openai"), clock=Clock(start=START), offload=inline,
                     runtime=runtime)
    await nursery.start(services.serve)
    await make_groups(services, "nomodel")
    handle = await services.supervisor.submit("nomodel", Work("once 0"))
    with trio.fail_after(10):
        outcome = await handle.wait()
    assert outcome.status == "error" and "containerConfig.agent.model is required" in outcome.error
    assert runtime.containers == []


def test_usage_a_container_reports_is_taken_only_as_sane_counts():
    from nanoclaw.supervisor._usage import FRAME_CAP, Usage

    usage = Usage()
    assert not usage.add({"status": "success"})
    assert not usage.add({"usage": {"inputTokens": -5, "outputTokens": "9", "cacheReadTokens": True}})
    assert not usage.add({"usage": [1, 2], "model": "  "})
    assert usage.add({"usage": {"inputTokens": 10**12, "outputTokens": 3}, "model": "m" * 500})
    assert usage.as_dict() == {"inputTokens": FRAME_CAP, "outputTokens": 3, "cacheReadTokens": 0,
                               "cacheCreationTokens": 0, "totalTokens": FRAME_CAP + 3}
    assert usage.model == "m" * 200
