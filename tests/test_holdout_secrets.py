"""Issue 12, secrets and logs: tokens stay out of the log after a restart; file modes."""
from __future__ import annotations

import os
import stat

import httpx
import pytest

from fakes.telegram import TOKEN, serve_fake_telegram
from nanoclaw.secrets import SecretBox
from serverproc import cli_env, serve_process


@pytest.fixture
async def tg(nursery):
    return await nursery.start(serve_fake_telegram)


async def test_a_stored_telegram_token_never_reaches_the_log_after_a_restart(tmp_path, tg):
    env = cli_env(tmp_path, NANOCLAW_TELEGRAM_API_BASE=tg.url)
    async with serve_process(tmp_path, env=env) as server:
        async with httpx.AsyncClient(base_url=server.url + "/api/v1") as client:
            answer = await client.post("/channels/telegram/connect", json={"token": TOKEN})
            assert answer.status_code == 200, answer.text
        await server.assert_clean_stop()
    first_log = server.log()
    # Counted before the restart: the restarted channel may start its first (long) poll
    # before the server answers as ready, and a pushed update ends that poll.
    before = len(tg.calls_of("getUpdates"))
    async with serve_process(tmp_path, env=env, log_name="serve2.log") as server:
        await tg.wait_for(lambda: len(tg.calls_of("getUpdates")) > before, timeout=30)
        update = tg.push_message(-100, "hello")
        await tg.wait_for(lambda: tg.confirmed > update["update_id"], timeout=30)
        await server.assert_clean_stop()
    for log in (first_log, server.log()):
        assert TOKEN not in log
        assert TOKEN.split(":", 1)[1] not in log


def test_every_field_of_a_decrypted_json_secret_can_be_registered(tmp_path):
    box = SecretBox(tmp_path)
    sealed = box.encrypt('{"token": "123456:abcdefsecret"}', context="c")
    fresh = SecretBox(tmp_path)  # a restarted process knows nothing yet
    fresh.decrypt(sealed, context="c")
    # A URL path with any bot token is scrubbed even before the value is known.
    assert fresh.redact("POST http://x/bot999:unknown_Token-1/getMe") == "POST http://x/bot[REDACTED]/getMe"


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


async def test_data_and_config_dirs_are_0700_and_the_database_files_0600(server):
    settings = server.settings
    answer = await server.client.post("/container/namespaces", json={"name": "modes"})
    assert answer.status_code == 201, answer.text
    assert _mode(settings.data_dir) == 0o700
    assert _mode(settings.config_dir) == 0o700
    for suffix in ("", "-wal", "-shm"):
        assert _mode(f"{settings.database_path}{suffix}") == 0o600, suffix


async def test_the_cli_creates_the_database_private_too(tmp_path):
    from serverproc import run_cli

    done = await run_cli("api-key", "list", env=cli_env(tmp_path))
    assert done.returncode == 0, done.stderr
    assert _mode(tmp_path / "data") == 0o700
    assert _mode(tmp_path / "data" / "nanoclaw.db") == 0o600


async def test_start_up_warns_about_existing_more_open_dirs_and_files(tmp_path):
    (tmp_path / "data").mkdir(mode=0o755)
    os.chmod(tmp_path / "data", 0o755)
    (tmp_path / "config").mkdir()
    os.chmod(tmp_path / "config", 0o750)
    db = tmp_path / "data" / "nanoclaw.db"
    db.touch()
    os.chmod(db, 0o644)
    async with serve_process(tmp_path) as server:
        await server.assert_clean_stop()
    log = server.log()
    assert f"{tmp_path / 'data'} is mode 0755" in log
    assert f"{tmp_path / 'config'} is mode 0750" in log
    assert f"{db} is mode 0644" in log
