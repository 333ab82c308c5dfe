"""What a firing hands to the supervisor, and what its outcome leaves behind."""
from __future__ import annotations

import pytest
import trio

from nanoclaw.models import ContainerConfig
from schedule_support import Instance, RecordingSupervisor, SendTo, unix

START = unix(2026, 3, 6)


@pytest.fixture
async def instance(nursery, tmp_path):
    return Instance(nursery, tmp_path, START)


async def test_run_is_task_work_for_the_group_with_overrides_merged(instance, autojump_clock):
    with trio.fail_after(600):
        supervisor = await instance.start()
        await instance.group(containerConfig=ContainerConfig(memoryMb=2048, timeoutSecs=900, env=["A=1"]))
        schedule = await instance.schedule("interval", 60_000, contextMode="group",
                                           containerConfig={"timeoutSecs": 600, "env": []})
        await instance.sleep_until(START + 61)
    [(_, group, request)] = supervisor.received
    assert group == "ops"
    assert (request.prompt, request.kind, request.group_session, request.chat_jid, request.schedule_id) == (
        "do it", "task", True, "tg:100", schedule.id)
    config = request.container_config
    assert (config.timeoutSecs, config.env, config.memoryMb) == (600, [], 2048)


async def test_without_an_override_the_namespace_config_applies(instance, autojump_clock):
    with trio.fail_after(600):
        supervisor = await instance.start()
        await instance.group()
        await instance.schedule("interval", 60_000)
        await instance.sleep_until(START + 61)
    assert supervisor.received[0][2].container_config is None
    assert supervisor.received[0][2].group_session is False  # contextMode "isolated"


async def test_results_go_to_the_chat_and_to_the_log(instance, autojump_clock):
    sent = []

    async def send_message(chat_jid, text):
        sent.append((chat_jid, text))

    with trio.fail_after(600):
        await instance.start(RecordingSupervisor(None, results=("first", "second")))
        instance.scheduler.outbox = SendTo(send_message)
        await instance.group(chats=("tg:7", "tg:8"))
        schedule = await instance.schedule("once", "2026-03-06T00:01:00Z")
        await instance.sleep_until(START + 120)
        [log] = await instance.logs(schedule.id)
        done = await instance.scheduler.get(schedule.id)
    assert sent == [("tg:7", "first"), ("tg:7", "second")]
    assert (log["status"], log["result"], log["run_id"], log["duration_ms"]) == ("success", "second", "run-1", 1234)
    assert done.lastResult == "second"


async def test_an_unreachable_chat_does_not_fail_the_run(instance, autojump_clock):
    async def send_message(chat_jid, text):
        raise RuntimeError("channel down")

    with trio.fail_after(600):
        await instance.start()
        instance.scheduler.outbox = SendTo(send_message)
        await instance.group()
        schedule = await instance.schedule("once", "2026-03-06T00:01:00Z")
        await instance.sleep_until(START + 120)
        [log] = await instance.logs(schedule.id)
        audit = await instance.services.audit.entries(limit=10, severity="warning")
    assert log["status"] == "success"
    assert any("not delivered to tg:100" in e["message"] for e in audit)


@pytest.mark.parametrize("status, logged", [("error", "error"), ("timeout", "timeout"), ("cancelled", "error")])
async def test_a_failed_run_is_logged_with_its_error(instance, autojump_clock, status, logged):
    with trio.fail_after(600):
        await instance.start(RecordingSupervisor(None, status=status, results=(), error=f"it went {status}"))
        await instance.group()
        schedule = await instance.schedule("once", "2026-03-06T00:01:00Z")
        await instance.sleep_until(START + 120)
        [log] = await instance.logs(schedule.id)
        done = await instance.scheduler.get(schedule.id)
    assert (log["status"], log["error"], log["result"]) == (logged, f"it went {status}", None)
    assert done.lastResult == f"it went {status}"


class Refusing(RecordingSupervisor):
    async def submit(self, group, work):
        raise RuntimeError("the supervisor is gone")


async def test_a_due_run_the_supervisor_cannot_take_is_logged_as_an_error(instance, autojump_clock):
    with trio.fail_after(600):
        await instance.start(Refusing(None))
        await instance.group()
        schedule = await instance.schedule("interval", 60_000)
        await instance.sleep_until(START + 61)
        [log] = await instance.logs(schedule.id)
        row = await instance.row(schedule.id)
    assert (log["status"], log["error"]) == ("error", "could not start the run: the supervisor is gone")
    assert row["next_run_ms"] == log["planned_ms"] + 60_000
