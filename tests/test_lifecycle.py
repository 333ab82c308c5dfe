"""The server as a process: start-up, insecure bind refusal, graceful stop, restarts,
kill -9 durability and the same app under an external Hypercorn (issue 2, items 3-5).

Process start-up is real time; every wait is bounded (serverproc.STARTUP_TIMEOUT).
"""
from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import httpx
import pytest
import trio

from checks import assert_error
from conftest import make_settings
from nanoclaw import __version__
from serverproc import (BIN, cli_env, create_api_key, loopback, run_cli, running_server, serve_process,
                        spawned, wait_healthy)

GRACEFUL_TIMEOUT = 5  # Settings.graceful_timeout


# -- start-up -------------------------------------------------------------------

async def test_serve_prints_url_docs_url_and_auth_then_answers(tmp_path):
    async with serve_process(tmp_path) as server:
        assert server.url.startswith("http://127.0.0.1:")
        assert f"API docs: {server.url}/docs" in server.banner
        assert any(line.startswith("Auth: off") for line in server.banner)
        health = await wait_healthy(server.url)
        assert health.json()["auth"] is False
        await server.assert_clean_stop()


async def test_the_console_script_serves_too(tmp_path):
    async with serve_process(tmp_path, command=[str(BIN / "nanoclaw")]) as server:
        await wait_healthy(server.url)
        await server.assert_clean_stop()


async def test_serve_keeps_its_data_where_the_flags_say(tmp_path):
    env = cli_env(tmp_path)
    del env["NANOCLAW_DATA_DIR"], env["NANOCLAW_CONFIG_DIR"]
    async with serve_process(tmp_path, "--data-dir", str(tmp_path / "d"), "--config-dir", str(tmp_path / "c"),
                             env=env, cwd=tmp_path) as server:
        async with httpx.AsyncClient(base_url=server.url + "/api/v1") as client:
            await client.post("/container/namespaces", json={"name": "placed"})
            await client.put("/container/mount/allowlist", json={"allowedRoots": [], "blockedPatterns": []})
        await server.assert_clean_stop()
    assert (tmp_path / "d" / "nanoclaw.db").exists()
    assert (tmp_path / "d" / "groups" / "placed").is_dir()
    assert (tmp_path / "c" / "mount-allowlist.json").exists()
    assert not (tmp_path / "data").exists()


async def test_a_port_in_use_is_a_clear_error_and_exit_code_1(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = await run_cli("serve", "--port", str(port), env=cli_env(tmp_path))
    assert done.returncode == 1
    assert done.stderr.decode().startswith("error:")
    assert f"error: Address already in use (127.0.0.1:{port})" in done.stderr.decode()
    assert "Traceback" not in done.stderr.decode()


# -- insecure bind refusal ------------------------------------------------------------

async def test_a_non_loopback_bind_without_a_key_exits_with_code_2(tmp_path):
    done = await run_cli("serve", "--host", "0.0.0.0", "--port", "0", env=cli_env(tmp_path))
    assert done.returncode == 2
    err = done.stderr.decode()
    assert "0.0.0.0" in err
    assert "--allow-insecure" in err and "api-key create" in err
    assert "Traceback" not in err
    assert "serving on" not in done.stdout.decode()


async def test_a_non_loopback_bind_from_the_environment_is_refused_too(tmp_path):
    done = await run_cli("serve", "--port", "0", env=cli_env(tmp_path, NANOCLAW_HOST="0.0.0.0"))
    assert done.returncode == 2


async def test_allow_insecure_serves_a_non_loopback_address(tmp_path):
    async with serve_process(tmp_path, "--host", "0.0.0.0", "--allow-insecure") as server:
        assert any(line.startswith("Auth: off") for line in server.banner)
        await wait_healthy(loopback(server.url))
        await server.assert_clean_stop()


async def test_allow_insecure_from_the_environment(tmp_path):
    env = cli_env(tmp_path, NANOCLAW_ALLOW_INSECURE="1")
    async with serve_process(tmp_path, "--host", "0.0.0.0", env=env) as server:
        await wait_healthy(loopback(server.url))
        await server.assert_clean_stop()


async def test_a_non_loopback_bind_with_a_key_serves_with_auth_on(tmp_path):
    _, key = await create_api_key(tmp_path)
    async with serve_process(tmp_path, "--host", "0.0.0.0") as server:
        assert any(line.startswith("Auth: on") for line in server.banner)
        url = loopback(server.url)
        assert (await wait_healthy(url)).json()["auth"] is True
        async with httpx.AsyncClient(base_url=url + "/api/v1") as client:
            assert_error(await client.get("/container/namespaces"), 401)
            assert (await client.get("/container/namespaces", headers={"X-API-Key": key})).status_code == 200
        await server.assert_clean_stop()


# -- graceful stop --------------------------------------------------------------------

async def test_sigint_stops_serve_with_exit_code_0_within_the_graceful_timeout(tmp_path):
    async with serve_process(tmp_path) as server:
        await wait_healthy(server.url)
        await server.assert_clean_stop(signal.SIGINT, timeout=GRACEFUL_TIMEOUT)


async def test_sigterm_stops_serve_with_exit_code_0(tmp_path):
    async with serve_process(tmp_path) as server:
        await wait_healthy(server.url)
        await server.assert_clean_stop(signal.SIGTERM, timeout=GRACEFUL_TIMEOUT)


async def test_sigint_stops_serve_promptly_with_a_keep_alive_connection_open(tmp_path):
    async with serve_process(tmp_path) as server:
        async with httpx.AsyncClient(base_url=server.url) as client:
            assert (await client.get("/api/v1/container/namespaces")).status_code == 200
            await server.assert_clean_stop(signal.SIGINT, timeout=GRACEFUL_TIMEOUT)


async def test_a_write_answered_before_sigint_is_kept(tmp_path):
    async with serve_process(tmp_path) as server:
        async with httpx.AsyncClient(base_url=server.url + "/api/v1") as client:
            assert (await client.post("/container/namespaces", json={"name": "kept"})).status_code == 201
        await server.assert_clean_stop()
    async with serve_process(tmp_path, log_name="serve2.log") as server:
        async with httpx.AsyncClient(base_url=server.url + "/api/v1") as client:
            assert (await client.get("/container/namespaces/kept")).status_code == 200
        await server.stop()


# -- durability -----------------------------------------------------------------------

async def test_nothing_is_lost_on_kill_9_once_a_write_returned(tmp_path):
    async with serve_process(tmp_path) as server:
        async with httpx.AsyncClient(base_url=server.url + "/api/v1") as client:
            answer = await client.post("/container/namespaces", json={"name": "durable", "chatJids": ["tg:7"]})
            assert answer.status_code == 201
            await client.put("/container/namespaces/durable/instructions", json={"instructions": "still here"})
            await client.put("/channels/sender-allowlist", json={"enabled": True, "entries": [{"chatJid": "tg:7"}]})
        server.process.kill()  # SIGKILL: no shutdown code runs
        with trio.fail_after(10):
            assert await server.process.wait() == -signal.SIGKILL
    async with serve_process(tmp_path, log_name="serve2.log") as server:
        async with httpx.AsyncClient(base_url=server.url + "/api/v1") as client:
            ns = (await client.get("/container/namespaces/durable")).json()
            assert ns["chatJids"] == ["tg:7"]
            instructions = (await client.get("/container/namespaces/durable/instructions")).json()
            assert instructions["instructions"] == "still here"
            assert (await client.get("/channels/sender-allowlist")).json()["enabled"] is True
            audit = (await client.get("/container/audit-log")).json()["entries"]
            assert any(e["message"] == "namespace durable created" for e in audit)
        await server.assert_clean_stop()


async def test_a_restart_keeps_every_record(tmp_path):
    settings = make_settings(tmp_path)
    _, key = await create_api_key(tmp_path)
    headers = {"X-API-Key": key}
    roots = [str(tmp_path), {"path": str(tmp_path / "rw"), "allowReadWrite": True, "description": ""}]
    senders = {"enabled": True, "entries": [{"chatJid": "tg:1", "label": "Alice"}]}
    async with running_server(settings) as server:
        client = server.client
        created = (await client.post("/container/namespaces", headers=headers, json={
            "name": "team", "description": "d", "chatJids": ["tg:1", "dc:2"], "trigger": "@Bot",
            "requiresTrigger": False, "isMain": True, "containerConfig": {"timeoutSecs": 60, "env": ["A=b"]},
        })).json()
        await client.put("/container/namespaces/team/instructions", headers=headers, json={"instructions": "group"})
        await client.put("/container/namespaces/global/instructions", headers=headers, json={"instructions": "all"})
        await client.put("/container/mount/allowlist", headers=headers,
                         json={"allowedRoots": roots, "blockedPatterns": ["node_modules"]})
        await client.put("/channels/sender-allowlist", headers=headers, json=senders)
        await client.get("/container/namespaces", headers={"X-API-Key": "wrong"})
        audit_before = (await client.get("/container/audit-log", headers=headers)).json()["entries"]
        allowlist_before = (await client.get("/container/mount/allowlist", headers=headers)).json()

    async with running_server(make_settings(tmp_path)) as server:
        client = server.client
        assert (await client.get("/health")).json()["auth"] is True
        assert_error(await client.get("/container/namespaces"), 401)
        assert (await client.get("/container/namespaces", headers=headers)).json() == {"namespaces": [created]}
        assert (await client.get("/container/namespaces/team/instructions", headers=headers)).json()[
            "instructions"] == "group"
        assert (await client.get("/container/namespaces/global/instructions", headers=headers)).json()[
            "instructions"] == "all"
        assert (await client.get("/container/mount/allowlist", headers=headers)).json() == allowlist_before
        assert (await client.get("/channels/sender-allowlist", headers=headers)).json() == senders
        audit_after = (await client.get("/container/audit-log", headers=headers)).json()["entries"]
        assert audit_after[-len(audit_before):] == audit_before
        assert any(e["severity"] == "warning" and e["category"] == "auth" for e in audit_after)


async def test_a_restart_keeps_the_uniqueness_rules(tmp_path):
    async with running_server(make_settings(tmp_path)) as server:
        await server.client.post("/container/namespaces", json={"name": "a", "chatJids": ["tg:1"], "isMain": True})
    async with running_server(make_settings(tmp_path)) as server:
        assert_error(await server.client.post("/container/namespaces", json={"name": "a"}), 409)
        assert_error(await server.client.post("/container/namespaces", json={"name": "b", "chatJids": ["tg:1"]}), 409)
        assert_error(await server.client.post("/container/namespaces", json={"name": "c", "isMain": True}), 409)


async def test_the_store_is_sqlite_in_wal_mode_with_every_migration(server, settings):
    import sqlite3

    conn = sqlite3.connect(settings.database_path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        versions = [row[0] for row in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]
    finally:
        conn.close()
    # Every shipped migration is applied (numbers may have gaps: each change gets its own).
    from nanoclaw.store._db import _migrations

    assert versions[0] == 1 and versions == [number for number, _, _ in _migrations()]


# -- under an external Hypercorn ----------------------------------------------------------

def hypercorn_process(tmp_path, env=None):
    return spawned(
        [str(BIN / "hypercorn"), "--worker-class", "trio", "--workers", "0", "--bind", "127.0.0.1:0",
         "nanoclaw.asgi:app"],
        env=env or cli_env(tmp_path), log_path=tmp_path / "hypercorn.log", cwd=tmp_path,
        ready=r"Running on http://", url=r"Running on (?P<url>http://\S+)", ready_on="stderr",
    )


async def test_the_asgi_app_runs_under_hypercorn_with_its_services(tmp_path):
    async with hypercorn_process(tmp_path) as server:
        assert (await wait_healthy(server.url)).json() == {"status": "ok", "version": __version__, "auth": False,
                                                           "runningAsRoot": os.geteuid() == 0}
        async with httpx.AsyncClient(base_url=server.url + "/api/v1") as client:
            # The store (a lifespan service) is open: a write works and lands in the data dir.
            assert (await client.post("/container/namespaces", json={"name": "asgi"})).status_code == 201
            assert (await client.get("/container/namespaces/asgi")).status_code == 200
            assert (tmp_path / "data" / "groups" / "asgi").is_dir()
            # A keep-alive connection is still open: it must not hold the stop.
            await server.assert_clean_stop(signal.SIGINT, timeout=GRACEFUL_TIMEOUT)


async def test_the_asgi_app_honours_api_keys(tmp_path):
    _, key = await create_api_key(tmp_path)
    async with hypercorn_process(tmp_path) as server:
        assert (await wait_healthy(server.url)).json()["auth"] is True
        async with httpx.AsyncClient(base_url=server.url + "/api/v1") as client:
            assert_error(await client.get("/container/namespaces"), 401)
            assert (await client.get("/container/namespaces", headers={"X-API-Key": key})).status_code == 200
        await server.assert_clean_stop(signal.SIGINT, timeout=GRACEFUL_TIMEOUT + 5)


def readme_hypercorn_command() -> list[str]:
    """The Hypercorn command line the README gives, as a user would paste it."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    [line] = [line for line in readme.splitlines() if "hypercorn" in line and line.startswith(".venv/bin/")]
    return line.split()


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _state(pid: int) -> str | None:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None  # gone: reaped


def is_zombie(pid: int) -> bool:
    return _state(pid) == "Z"


def is_running(pid: int) -> bool:
    return _state(pid) not in (None, "Z")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_the_readmes_hypercorn_command_works_and_a_stop_leaves_no_defunct_process(tmp_path, signum):
    # Issue 12, item 15: the command is on the venv's path, binds what --bind says, and a
    # Ctrl-C (SIGINT to every process of the foreground group) leaves nothing behind.
    argv = readme_hypercorn_command()
    assert argv[0] == ".venv/bin/hypercorn" and "--bind" in argv
    bind = argv.index("--bind") + 1
    assert argv[bind] == "127.0.0.1:55765"
    argv[0], argv[bind] = str(BIN / "hypercorn"), "127.0.0.1:0"  # this venv; any free port
    async with spawned(argv, env=cli_env(tmp_path), log_path=tmp_path / "hypercorn.log", cwd=tmp_path,
                       ready=r"Running on http://", url=r"Running on (?P<url>http://\S+)",
                       ready_on="stderr") as server:
        assert (await wait_healthy(server.url)).status_code == 200
        async with httpx.AsyncClient(base_url=server.url + "/api/v1") as client:
            assert (await client.post("/container/namespaces", json={"name": "kept"})).status_code == 201
        helpers = children_of(server.process.pid)
        for pid in helpers:
            os.kill(pid, signum)
        await server.assert_clean_stop(signum, timeout=GRACEFUL_TIMEOUT + 5)
    with trio.fail_after(10):  # every helper ends (reaped, or defunct if nobody reaps it)
        while [pid for pid in helpers if is_running(pid)]:
            await trio.sleep(0.1)
    left = [pid for pid in helpers if is_zombie(pid)]
    assert not left, f"defunct helper processes {left} of {argv}"
