"""When schedules fire, under autojump_clock with an injected clock (no wall-clock waits).

Each test is bounded with fail_after in (virtual) Trio time, sized to what it sleeps.
"""
from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
import trio

from nanoclaw.scheduler import ScheduleUpdate
from schedule_support import Instance, RecordingSupervisor, at, unix

FRIDAY = unix(2026, 3, 6)  # 00:00 UTC, a Friday
NEW_YORK = ZoneInfo("America/New_York")


@pytest.fixture
def instance(nursery, tmp_path):
    def _make(start: float = FRIDAY) -> Instance:
        return Instance(nursery, tmp_path, start)
    return _make


async def started(make, start: float = FRIDAY, supervisor: RecordingSupervisor | None = None) -> Instance:
    inst = make(start)
    await inst.start(supervisor)
    await inst.group()
    return inst


async def every(inst: Instance, ms: int):
    """An interval schedule of `ms` made now, and when that was (ms)."""
    schedule = await inst.schedule("interval", ms)
    return schedule, inst.now_ms()


async def test_cron_fires_at_each_due_minute_and_not_between(instance, autojump_clock):
    with trio.fail_after(3 * 3600):
        inst = await started(instance)
        await inst.schedule("cron", "*/7 * * * *")
        await inst.sleep_until(FRIDAY + 2 * 3600 + 30)
    due = [FRIDAY + h * 3600 + m * 60 for h in range(2) for m in range(60) if m % 7 == 0 and (h, m) != (0, 0)]
    due.append(FRIDAY + 2 * 3600)  # 02:00 matches */7 too
    assert inst.supervisor.times == [round(t * 1000) for t in due]


async def test_weekday_cron_skips_the_weekend(instance, autojump_clock):
    with trio.fail_after(8 * 86400):
        inst = await started(instance)
        await inst.schedule("cron", "0 9 * * 1-5")
        await inst.sleep_until(FRIDAY + 7 * 86400)
    fired = [at(ms) for ms in inst.supervisor.times]
    assert [d.strftime("%a %d %H:%M") for d in fired] == [
        "Fri 06 09:00", "Mon 09 09:00", "Tue 10 09:00", "Wed 11 09:00", "Thu 12 09:00"]


async def test_timezone_cron_keeps_local_time_across_dst_start(instance, autojump_clock):
    # New York moves from UTC-5 to UTC-4 at 02:00 local on Sunday 8 March 2026.
    with trio.fail_after(5 * 86400):
        inst = await started(instance)
        await inst.schedule("cron", "0 9 * * *", timezone="America/New_York")
        await inst.sleep_until(FRIDAY + 4 * 86400)
    fired = [at(ms) for ms in inst.supervisor.times]
    assert [d.strftime("%d %H:%M") for d in fired] == ["06 14:00", "07 14:00", "08 13:00", "09 13:00"]
    assert {d.astimezone(NEW_YORK).strftime("%H:%M") for d in fired} == {"09:00"}


async def test_time_skipped_by_dst_runs_right_after_the_jump(instance, autojump_clock):
    # 02:30 does not exist in New York on 8 March 2026: it runs at 03:30 EDT that day.
    with trio.fail_after(5 * 86400):
        inst = await started(instance)
        await inst.schedule("cron", "30 2 * * *", timezone="America/New_York")
        await inst.sleep_until(FRIDAY + 4 * 86400)
    local = [at(ms).astimezone(NEW_YORK).strftime("%d %H:%M") for ms in inst.supervisor.times]
    assert local == ["06 02:30", "07 02:30", "08 03:30", "09 02:30"]


async def test_time_repeated_by_dst_end_runs_once(instance, autojump_clock):
    # 01:30 happens twice in New York on 1 November 2026 (clocks fall back at 02:00 EDT).
    start = unix(2026, 10, 31)
    with trio.fail_after(4 * 86400):
        inst = await started(instance, start)
        await inst.schedule("cron", "30 1 * * *", timezone="America/New_York")
        await inst.sleep_until(start + 3 * 86400)
    fired = [at(ms) for ms in inst.supervisor.times]
    assert [d.strftime("%d %H:%M") for d in fired] == ["31 05:30", "01 05:30", "02 06:30"]


async def test_interval_fires_on_its_grid_without_drift_over_1000_runs(instance, autojump_clock):
    with trio.fail_after(6000):
        inst = await started(instance)
        schedule, created = await every(inst, 5000)
        first = round(dt.datetime.fromisoformat(schedule.nextRun).timestamp() * 1000)
        await inst.sleep_until((created + 5000 * 1000 + 2500) / 1000)
    assert first == created + 5000
    assert inst.supervisor.times == [created + 5000 * k for k in range(1, 1001)]
    logs = await inst.logs(schedule.id)
    assert len(logs) == 1000 and {r["status"] for r in logs} == {"success"}


async def test_once_fires_once_and_completes(instance, autojump_clock):
    with trio.fail_after(2 * 86400):
        inst = await started(instance)
        schedule = await inst.schedule("once", "2026-03-06T00:01:30Z")
        await inst.sleep_until(FRIDAY + 86400)
        done = await inst.scheduler.get(schedule.id)
    assert inst.supervisor.times == [round((FRIDAY + 90) * 1000)]
    assert (done.status, done.nextRun, done.enabled) == ("completed", None, True)
    assert done.lastRun == "2026-03-06T00:01:30.000Z"
    assert [r["status"] for r in await inst.logs(schedule.id)] == ["success"]


async def test_once_without_offset_is_read_in_the_schedule_timezone(instance, autojump_clock):
    with trio.fail_after(2 * 86400):
        inst = await started(instance)
        await inst.schedule("once", "2026-03-06T18:00:00", timezone="Asia/Tokyo")
        await inst.sleep_until(FRIDAY + 86400)
    assert inst.supervisor.times == [round(unix(2026, 3, 6, 9) * 1000)]


async def test_editing_to_an_earlier_time_rearms_the_sleeper(instance, autojump_clock):
    with trio.fail_after(600):
        inst = await started(instance)
        schedule = await inst.schedule("interval", 3_600_000)
        await inst.sleep_until(FRIDAY + 60)
        edited_at = inst.now_ms()
        await inst.scheduler.update(schedule.id, ScheduleUpdate(schedule={"type": "interval", "value": 10_000}))
        await inst.sleep_until(FRIDAY + 75)
    assert inst.supervisor.times == [edited_at + 10_000]


async def test_editing_to_a_later_time_does_not_fire_at_the_old_one(instance, autojump_clock):
    with trio.fail_after(2 * 3600):
        inst = await started(instance)
        schedule = await inst.schedule("cron", "5 0 * * *")
        await inst.scheduler.update(schedule.id, ScheduleUpdate(schedule={"type": "cron", "value": "0 1 * * *"}))
        await inst.sleep_until(FRIDAY + 3600 + 30)
    assert inst.supervisor.times == [round((FRIDAY + 3600) * 1000)]


async def test_pause_stops_firing_and_resume_restarts_it(instance, autojump_clock):
    with trio.fail_after(600):
        inst = await started(instance)
        schedule, created = await every(inst, 10_000)
        await inst.sleep_until(FRIDAY + 25)
        paused = await inst.scheduler.update(schedule.id, ScheduleUpdate(enabled=False))
        await inst.sleep_until(FRIDAY + 100)
        assert inst.supervisor.times == [created + 10_000, created + 20_000]
        resumed_at = inst.now_ms()
        resumed = await inst.scheduler.update(schedule.id, ScheduleUpdate(enabled=True))
        await inst.sleep_until(FRIDAY + 115)
    assert (paused.status, paused.enabled, paused.nextRun) == ("paused", False, None)
    assert (resumed.status, resumed.enabled) == ("active", True)
    assert inst.supervisor.times[2:] == [resumed_at + 10_000]


async def test_restart_after_missing_three_slots_runs_once_and_logs_two_skips(instance, autojump_clock):
    with trio.fail_after(600):
        inst = await started(instance)
        schedule, created = await every(inst, 60_000)
        await inst.sleep_until(FRIDAY + 30)
        await inst.stop()
        await trio.sleep_until(trio.current_time() + 170)  # down while slots +60 s, +120 s, +180 s pass
        second = await inst.start()
        restarted = inst.now_ms()
        await inst.sleep_until(FRIDAY + 230)
        assert len(second.received) == 1 and second.times[0] - restarted < 1000
        logs = await inst.logs(schedule.id)
        await inst.sleep_until(FRIDAY + 250)
    assert restarted >= created + 200_000
    assert [(r["status"], r["planned_ms"] - created, bool(r["catch_up"])) for r in logs] == [
        ("skipped", 120_000, False), ("skipped", 180_000, False), ("success", 60_000, True)]
    # Later slots stay on the original grid and are ordinary runs.
    assert second.times[1:] == [created + 240_000]


async def test_crash_after_next_run_advanced_does_not_run_the_slot_twice(instance, autojump_clock):
    with trio.fail_after(600):
        inst = await started(instance, supervisor=RecordingSupervisor(None, hang=True))
        first = inst.supervisor
        schedule, created = await every(inst, 60_000)
        await inst.sleep_until(FRIDAY + 61)
        assert first.times == [created + 60_000]  # handed over; the server dies before it finishes
        before_crash = await inst.row(schedule.id)
        await inst.stop()
        second = await inst.start()
        await inst.sleep_until(FRIDAY + 119)
        assert second.received == []
        await inst.sleep_until(FRIDAY + 121)
        logs = await inst.logs(schedule.id)
    assert before_crash["next_run_ms"] == created + 120_000
    assert second.times == [created + 120_000]
    assert [(r["status"], r["planned_ms"] - created) for r in logs] == [("error", 60_000), ("success", 120_000)]
    assert "stopped before the run finished" in logs[0]["error"]


async def test_a_slot_due_while_the_previous_run_is_going_is_skipped(instance, autojump_clock):
    with trio.fail_after(600):
        inst = await started(instance, supervisor=RecordingSupervisor(None, hold=True))
        held = inst.supervisor
        schedule, created = await every(inst, 10_000)
        await inst.sleep_until(FRIDAY + 25)
        held.release()
        await inst.sleep_until(FRIDAY + 35)
        logs = await inst.logs(schedule.id)
    assert held.times == [created + 10_000, created + 30_000]
    assert [(r["status"], r["planned_ms"] - created) for r in logs] == [
        ("success", 10_000), ("skipped", 20_000), ("running", 30_000)]
    assert "still going" in logs[1]["error"]
