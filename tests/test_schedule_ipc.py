"""Task requests from inside a container (IPC): a group manages its own schedules; main may manage any."""
from __future__ import annotations

import pytest
import trio

from nanoclaw.errors import Forbidden, Invalid, NotFound
from schedule_support import Instance, unix

START = unix(2026, 3, 6)
EVERY_MINUTE = {"type": "cron", "value": "* * * * *"}


@pytest.fixture
async def inst(nursery, tmp_path):
    instance = Instance(nursery, tmp_path, START)
    with trio.fail_after(60):
        await instance.start()
        await instance.group("main", chats=("tg:1",), isMain=True)
        await instance.group("team", chats=("tg:2",))
        await instance.group("other", chats=("tg:3",))
    return instance


async def schedules(inst) -> list:
    return (await inst.scheduler.list())[0]


def schedule_task(**fields) -> dict:
    return {"type": "schedule_task", "prompt": "check the build", "schedule": EVERY_MINUTE,
            "contextMode": "group", "targetGroup": None} | fields


async def test_a_group_schedules_a_task_for_itself(inst):
    await inst.scheduler.handle_ipc("team", False, schedule_task())
    [s] = await schedules(inst)
    assert (s.group, s.prompt, s.schedule.value, s.contextMode, s.chatJid, s.status) == (
        "team", "check the build", "* * * * *", "group", "tg:2", "active")
    audit = await inst.services.audit.entries(limit=5, group="team")
    assert audit[0]["details"]["by"] == "ipc:team"


async def test_a_group_may_not_schedule_for_another(inst):
    with pytest.raises(Forbidden):
        await inst.scheduler.handle_ipc("team", False, schedule_task(targetGroup="other"))
    assert await schedules(inst) == []


async def test_main_may_schedule_for_any_group(inst):
    await inst.scheduler.handle_ipc("main", True, schedule_task(targetGroup="other"))
    [s] = await schedules(inst)
    assert (s.group, s.chatJid) == ("other", "tg:3")


@pytest.mark.parametrize("request_", [
    {"type": "schedule_task", "schedule": EVERY_MINUTE},
    schedule_task(prompt=""),
    schedule_task(schedule=None),
    schedule_task(schedule={"type": "interval", "value": 10}),
    schedule_task(schedule={"type": "cron", "value": "every day"}),
    schedule_task(contextMode="shared"),
    {"type": "reboot"},
    {"type": "pause_task"},
    ["schedule_task"],
])
async def test_malformed_requests_are_invalid_and_change_nothing(inst, request_):
    with pytest.raises(Invalid):
        await inst.scheduler.handle_ipc("team", False, request_)
    assert await schedules(inst) == []


async def test_a_group_pauses_resumes_and_cancels_its_own_task(inst):
    await inst.scheduler.handle_ipc("team", False, schedule_task())
    [s] = await schedules(inst)
    await inst.scheduler.handle_ipc("team", False, {"type": "pause_task", "taskId": s.id})
    assert (await inst.scheduler.get(s.id)).status == "paused"
    await inst.scheduler.handle_ipc("team", False, {"type": "resume_task", "taskId": s.id})
    assert (await inst.scheduler.get(s.id)).status == "active"
    await inst.scheduler.handle_ipc("team", False, {"type": "cancel_task", "taskId": s.id})
    assert await schedules(inst) == []


@pytest.mark.parametrize("kind", ["pause_task", "resume_task", "cancel_task"])
async def test_a_group_may_not_touch_another_groups_task(inst, kind):
    await inst.scheduler.handle_ipc("other", False, schedule_task())
    [before] = await schedules(inst)
    with pytest.raises(Forbidden):
        await inst.scheduler.handle_ipc("team", False, {"type": kind, "taskId": before.id})
    assert await schedules(inst) == [before]


async def test_main_may_manage_any_task(inst):
    await inst.scheduler.handle_ipc("other", False, schedule_task())
    [s] = await schedules(inst)
    await inst.scheduler.handle_ipc("main", True, {"type": "pause_task", "taskId": s.id})
    assert (await inst.scheduler.get(s.id)).status == "paused"


async def test_unknown_task_id_is_not_found(inst):
    with pytest.raises(NotFound):
        await inst.scheduler.handle_ipc("team", False, {"type": "cancel_task", "taskId": "nope"})


@pytest.mark.parametrize("value", [3_600_000, "3600000", " 3600000 "])
async def test_an_interval_is_taken_as_a_number_or_an_integer_in_a_string(inst, value):
    # Issue 12, item 10: agents wrote "3600000"; the runner now writes 3600000.
    await inst.scheduler.handle_ipc("team", False, schedule_task(schedule={"type": "interval", "value": value}))
    [s] = await schedules(inst)
    assert (s.schedule.type, s.schedule.value) == ("interval", 3_600_000)


@pytest.mark.parametrize("value", ["3600000.5", "1e6", "-3600000", "", "٣٦٠٠٠٠٠"])
async def test_an_interval_string_that_is_not_a_plain_integer_is_refused(inst, value):
    with pytest.raises(Invalid):
        await inst.scheduler.handle_ipc("team", False, schedule_task(schedule={"type": "interval", "value": value}))
    assert await schedules(inst) == []
