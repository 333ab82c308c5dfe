"""Queue rules of the supervisor (architecture.md section 4), under autojump_clock with a fake engine."""
from __future__ import annotations

import pytest
import trio
import trio.testing

from conftest import make_settings
from fake_runtime import FakeRuntime
from nanoclaw.clock import Clock
from nanoclaw.services import build
from nanoclaw.supervisor import RunSink, Work, WorkFeed

START = 1_800_000_000.0


async def inline(fn, *args):
    return fn(*args)


class ListMessages(WorkFeed):
    """The channel layer's part, reduced to lists: what arrived, the cursor, what was sent.
    The supervisor's feed (a group's messages since its cursor are one batch, from the chat
    `chat(group)`) and the outbox the IPC watcher and the scheduler send with."""

    def __init__(self) -> None:
        self.inbox: dict[str, list[str]] = {}
        self.cursor: dict[str, int] = {}
        self.sent: list[tuple[str, str]] = []

    def add(self, group: str, text: str) -> None:
        self.inbox.setdefault(group, []).append(text)

    def chat(self, group: str) -> str:
        return f"tg:{group}"

    def _batch(self, group: str) -> tuple[str, int] | None:
        new = self.inbox.get(group, [])[self.cursor.get(group, 0):]
        return ("\n".join(new), len(self.inbox[group])) if new else None

    async def next_work(self, group):
        batch = self._batch(group)
        if batch is None:
            return None
        return Work(batch[0], kind="message", sink=_ListSink(self, group, batch[1]), chat_jid=self.chat(group),
                    group_session=True)

    async def follow_up(self, run, write):
        batch = self._batch(run.group)
        if batch is None:
            return "none"
        if self.chat(run.group) != run.chat_jid:
            return "own container"
        await write(batch[0], [])
        self.cursor[run.group] = batch[1]
        return "taken"

    async def send(self, chat_jid, text):
        self.sent.append((chat_jid, text))


class _ListSink(RunSink):
    """Results go to `sent`; the cursor moves past the batch with the first."""

    def __init__(self, messages: ListMessages, group: str, cursor: int) -> None:
        self.messages, self.group, self.cursor = messages, group, cursor
        self.answered = False

    async def result(self, run, text):
        await self.messages.send(run.chat_jid, text)
        if not self.answered:
            self.messages.cursor[self.group] = self.cursor
            self.answered = True

    async def notice(self, run, text):
        await self.messages.send(run.chat_jid, text)


def task_work(prompt: str, **fields) -> Work:
    """A scheduled task's work, as the scheduler submits it (without a schedule)."""
    return Work(prompt, kind="task", priority=0, **fields)


@pytest.fixture
async def env(nursery, tmp_path):
    runtime = FakeRuntime(nursery)
    settings = make_settings(tmp_path, max_concurrent=2)
    messages = ListMessages()
    services = build(settings, clock=Clock(start=START), offload=inline, runtime=runtime, feed=messages,
                     outbox=messages)
    await nursery.start(services.serve)
    services.runtime_fake = runtime
    services.messages = messages
    return services


def message(services, group: str, text: str) -> None:
    """A chat message arrives: the channel layer files it and tells the supervisor."""
    services.messages.add(group, text)
    services.supervisor.notify(group)


async def make_groups(services, *names, **config):
    for name in names:
        await services.namespaces.create({"name": name, "containerConfig": _config(**config)})


def _config(**values):
    from nanoclaw.models import ContainerConfig

    return ContainerConfig(**values)


async def test_never_more_than_max_concurrent_and_no_free_slot_left_idle(env, autojump_clock):
    groups = [f"g{i}" for i in range(6)]
    await make_groups(env, *groups)
    handles = [await env.supervisor.submit(g, Work("once 10")) for g in groups]
    with trio.fail_after(300):
        outcomes = [await h.wait() for h in handles]
    assert [o.status for o in outcomes] == ["success"] * 6
    runtime = env.runtime_fake
    assert runtime.max_running == 2
    starts = sorted(round(c.started_at) for c in runtime.containers)
    # Each pair starts the moment the previous pair ends: no slot ever stays free.
    assert starts == [0, 0, 10, 10, 20, 20]
    # FIFO: groups start in the order they were queued.
    assert [c.args[c.args.index("--label") + 3].split("=")[1] for c in runtime.containers] == groups


async def test_raising_the_limit_starts_waiting_groups_at_once(env, autojump_clock):
    groups = [f"g{i}" for i in range(6)]
    await make_groups(env, *groups)
    for g in groups:
        await env.supervisor.submit(g, Work("once 100"))
    await trio.sleep(1)
    assert env.supervisor.statistics().running == 2
    assert env.supervisor.statistics().queued == 4
    before = trio.current_time()
    env.supervisor.set_max_concurrent(6)
    await trio.testing.wait_all_tasks_blocked()
    assert len(env.runtime_fake.running) == 6
    assert trio.current_time() == before


async def test_one_container_per_group_at_a_time(env, autojump_clock):
    await make_groups(env, "solo")
    handles = [await env.supervisor.submit("solo", Work(f"once {5 + i}")) for i in range(3)]
    with trio.fail_after(100):
        for h in handles:
            await h.wait()
    runtime = env.runtime_fake
    assert runtime.max_running == 1
    spans = [(c.started_at, c.ended_at) for c in runtime.containers]
    assert all(spans[i][1] <= spans[i + 1][0] for i in range(len(spans) - 1))


async def test_scheduled_tasks_run_before_pending_messages(env, autojump_clock):
    await make_groups(env, "busy", "other", "third")
    env.supervisor.set_max_concurrent(1)
    blocker = await env.supervisor.submit("other", Work("once 10"))
    message(env, "busy", "once 1")
    task = await env.supervisor.submit("busy", task_work("once 2"))
    with trio.fail_after(100):
        await blocker.wait()
        await task.wait()
    await trio.sleep(20)
    busy = [c for c in env.runtime_fake.containers if "nanoclaw.group=busy" in c.args]
    assert [c.stdin["isScheduledTask"] for c in busy] == [True, False]
    assert busy[1].stdin["prompt"] == "once 1"


async def test_follow_up_reaches_the_live_message_container(env, autojump_clock):
    await make_groups(env, "chat", idleTimeoutSecs=60)
    message(env, "chat", "work 1")
    await trio.sleep(2)
    message(env, "chat", "second question")
    await trio.sleep(1)
    containers = env.runtime_fake.containers
    assert len(containers) == 1
    assert containers[0].outputs == ["done: work 1", "re: second question"]
    assert env.messages.sent == [("tg:chat", "done: work 1"), ("tg:chat", "re: second question")]
    assert env.messages.cursor["chat"] == 2


async def test_no_follow_ups_are_piped_into_a_task_container(env, autojump_clock):
    await make_groups(env, "tasky", idleTimeoutSecs=30)
    task = await env.supervisor.submit("tasky", task_work("work 5"))
    await trio.sleep(1)
    message(env, "tasky", "once 1")
    with trio.fail_after(100):
        await task.wait()
    await trio.sleep(5)
    containers = env.runtime_fake.containers
    assert len(containers) == 2
    assert containers[0].outputs == ["done: work 5"]
    # Its turn done, the task container is closed at once instead of idling for 30 s.
    assert containers[0].exit_code == 0 and containers[0].ended_at < 6
    assert containers[1].stdin["prompt"] == "once 1"
    assert containers[1].started_at >= containers[0].ended_at


async def test_task_arriving_while_container_idles_closes_it_early(env, autojump_clock):
    await make_groups(env, "idler", idleTimeoutSecs=600)
    message(env, "idler", "work 1")
    await trio.sleep(5)
    assert env.supervisor.group_state("idler")["idle"] is True
    task = await env.supervisor.submit("idler", task_work("once 1"))
    with trio.fail_after(30):
        await task.wait()
    first, second = env.runtime_fake.containers
    assert first.exit_code == 0 and first.ended_at < 10
    assert second.stdin["isScheduledTask"] is True


async def test_idle_timeout_writes_close_and_container_exits(env, autojump_clock):
    await make_groups(env, "quiet", idleTimeoutSecs=30)
    message(env, "quiet", "work 2")
    await trio.sleep(100)
    container = env.runtime_fake.containers[0]
    assert env.messages.sent == [("tg:quiet", "done: work 2")]
    assert container.exit_code == 0 and not container.stopped
    assert container.ended_at == pytest.approx(32, abs=0.5)
    row = await env.db.fetchone("SELECT status FROM run_history")
    assert row["status"] == "success"


async def test_hard_timeout_stops_the_container_by_name(env, autojump_clock):
    await make_groups(env, "stuck", timeoutSecs=60)
    handle = await env.supervisor.submit("stuck", Work("silent"))
    with trio.fail_after(200):
        outcome = await handle.wait()
    container = env.runtime_fake.containers[0]
    assert outcome.status == "timeout"
    assert container.stopped
    assert container.ended_at == pytest.approx(60, abs=0.5)
    row = await env.db.fetchone("SELECT status, error FROM run_history WHERE id = ?", (outcome.run_id,))
    assert row["status"] == "timeout" and "60 s" in row["error"]


async def test_results_do_not_extend_the_lifetime_and_the_token_dies_with_it(env, autojump_clock):
    await make_groups(env, "chatty", timeoutSecs=20, idleTimeoutSecs=600)
    handle = await env.supervisor.submit("chatty", Work("chatter 4"))  # a result every 4 s, _close ignored
    await trio.sleep(19.5)
    assert env.runtime_fake.running and env.supervisor.proxy.statistics().live_runs == 1
    with trio.fail_after(5):
        outcome = await handle.wait()
    container = env.runtime_fake.containers[0]
    assert container.stopped and container.ended_at == pytest.approx(20, abs=0.5)
    assert container.outputs[:4] == ["still here"] * 4  # results at 4, 8, 12, 16: none moved the end
    assert outcome.status == "timeout" and "outlived its 20 s" in outcome.error
    assert env.supervisor.proxy.statistics().live_runs == 0


async def test_failed_message_runs_retry_with_backoff_then_give_up(env, autojump_clock):
    await make_groups(env, "flaky")
    message(env, "flaky", "fail")
    await trio.sleep(400)
    starts = [round(c.started_at) for c in env.runtime_fake.containers]
    assert starts == [0, 5, 15, 35, 75, 155]
    rows = await env.db.fetchall("SELECT message FROM audit_log WHERE category = 'container' ORDER BY id")
    assert "giving up on flaky after 5 retries" in rows[-1]["message"]
    assert env.messages.cursor.get("flaky") is None  # nothing reached the user: not advanced


async def test_cancelling_the_supervisor_stops_every_container(nursery, tmp_path, autojump_clock):
    runtime = FakeRuntime(nursery)
    services = build(make_settings(tmp_path), clock=Clock(start=START), offload=inline, runtime=runtime)
    scope = await nursery.start(services.serve)
    await make_groups(services, "a", "b", "c")
    for g in ("a", "b", "c"):
        await services.supervisor.submit(g, Work("silent"))
    await trio.sleep(1)
    assert len(runtime.running) == 3
    scope.cancel()
    await trio.testing.wait_all_tasks_blocked()
    assert runtime.running == {}
    assert all(c.stopped for c in runtime.containers)


async def test_run_events_follow_a_run_from_queue_to_finish(env, autojump_clock):
    await make_groups(env, "ev")
    events = []
    env.supervisor.subscribe(events.append)
    env.supervisor.subscribe(lambda event: 1 / 0)  # a broken listener changes nothing
    handle = await env.supervisor.submit("ev", Work("steps 2"))
    with trio.fail_after(60):
        outcome = await handle.wait()
    assert outcome.status == "success"
    assert [e.type for e in events] == ["queued", "started", "progress", "progress", "result", "finished"]
    assert {e.run_id for e in events} == {handle.run_id}
    assert [e.data["step"] for e in events if e.type == "progress"] == [0, 1]
    assert events[-2].data == {"text": "stepped"}
    assert events[-1].data["status"] == "success" and events[-1].kind == "adhoc"
