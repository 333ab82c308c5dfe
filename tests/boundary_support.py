"""Shared by the boundary tests (issue 11): a canary folder outside the data dir, and a live server."""
from __future__ import annotations

import json
import os
from pathlib import Path

import trio

from conftest import make_settings, start_server
from fake_runtime import FakeRuntime
from nanoclaw.clock import Clock
from test_ipc import FirstChats
from test_supervisor_queue import START, inline


def make_canary(root: Path) -> Path:
    """A host folder a container must never reach: message-shaped files, others, a subfolder."""
    canary = root / "canary"
    (canary / "sub").mkdir(parents=True)
    (canary / "a.json").write_text(json.dumps({"type": "message", "text": "leaked"}))
    (canary / "b.json").write_text(json.dumps({"type": "schedule_task", "prompt": "x",
                                               "schedule": {"type": "cron", "value": "* * * * *"}}))
    (canary / "secret.txt").write_text("the host's secret")
    (canary / "sub" / "c.json").write_text("{}")
    return canary


def snapshot(folder: Path) -> dict:
    """Every entry under folder with its kind, bytes and times: any read-write-move-delete shows."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            info = path.lstat()
            found[str(path.relative_to(folder))] = (
                info.st_mode, info.st_mtime_ns, info.st_ctime_ns,
                path.read_bytes() if path.is_file() else None)
    return found


async def live_server(nursery, tmp_path, **overrides):
    """A real HTTP server whose containers are FakeRuntime tasks; groups boss (main) and team are live."""
    messages = FirstChats()
    server = await start_server(nursery, make_settings(tmp_path, **overrides), clock=Clock(start=START),
                                offload=inline, runtime=FakeRuntime(nursery), feed=messages, outbox=messages)
    services = server.services
    services.messages = messages
    await services.namespaces.create({"name": "boss", "isMain": True, "chatJids": ["tg:1"]})
    await services.namespaces.create({"name": "team", "chatJids": ["tg:2"]})
    for group in ("boss", "team"):  # chat containers stay live (on-demand ones close once answered)
        messages.add(group, "work 0")
        services.supervisor.notify(group)
    await trio.sleep(1)
    messages.sent.clear()
    return server


async def still_serving(server) -> None:
    answer = await server.client.get("/container/queue/counts")
    assert answer.status_code == 200, answer.text


async def audit_rows(services, category: str = "ipc", severity: str | None = None) -> list:
    sql = "SELECT severity, group_name, message FROM audit_log WHERE category = ?"
    params: tuple = (category,)
    if severity is not None:
        sql += " AND severity = ?"
        params += (severity,)
    return [tuple(r) for r in await services.db.fetchall(sql + " ORDER BY id", params)]
