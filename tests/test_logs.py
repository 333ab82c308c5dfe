"""Log output an operator can ship: NANOCLAW_LOG_LEVEL, NANOCLAW_LOG_FORMAT=text|json, secrets redacted."""
from __future__ import annotations

import io
import json
import logging

import pytest
import trio

from conftest import make_settings, start_server
from fake_runtime import FakeRuntime
from nanoclaw import logs
from nanoclaw.clock import Clock
from nanoclaw.config import ConfigError, load_settings
from nanoclaw.secrets import SecretBox
from serverproc import cli_env, serve_process

SECRET = "sk-live-very-secret-value"


async def inline(fn, *args):
    return fn(*args)


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_settings_read_level_and_format_and_refuse_nonsense():
    settings = load_settings({"NANOCLAW_LOG_LEVEL": "debug", "NANOCLAW_LOG_FORMAT": "JSON"})
    assert (settings.log_level, settings.log_format) == ("DEBUG", "json")
    assert (load_settings({}).log_level, load_settings({}).log_format) == ("INFO", "text")
    with pytest.raises(ConfigError, match="NANOCLAW_LOG_FORMAT"):
        load_settings({"NANOCLAW_LOG_FORMAT": "xml"})
    with pytest.raises(ConfigError, match="NANOCLAW_LOG_LEVEL"):
        load_settings({"NANOCLAW_LOG_LEVEL": "loud"})


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_secrets_are_redacted_in_both_formats_exceptions_included(tmp_path, restore_logging, fmt):
    box = SecretBox(tmp_path)
    box.remember(SECRET)
    out = io.StringIO()
    logs.setup(box, "INFO", fmt, stream=out)
    log = logging.getLogger("nanoclaw.test")
    log.info("token is %s", SECRET)
    try:
        raise ValueError(f"bad {SECRET}")
    except ValueError:
        log.exception("failed with %s", "it")
    log.debug("not shown at INFO")
    text = out.getvalue()
    assert SECRET not in text and "[REDACTED]" in text and "not shown" not in text
    if fmt == "json":
        lines = [json.loads(line) for line in text.splitlines()]
        assert len(lines) == 2
        assert set(lines[0]) == {"time", "level", "logger", "message"}
        assert lines[0]["level"] == "INFO" and lines[0]["logger"] == "nanoclaw.test"
        assert lines[0]["message"] == "token is [REDACTED]" and lines[0]["time"].endswith("Z")
        assert "ValueError: bad [REDACTED]" in lines[1]["exception"]


async def test_a_runs_log_lines_carry_its_group_and_run_id(nursery, tmp_path, restore_logging, autojump_clock):
    server = await start_server(nursery, make_settings(tmp_path), clock=Clock(start=1_800_000_000.0),
                                offload=inline, runtime=FakeRuntime(nursery))
    out = io.StringIO()
    logs.setup(server.services.secrets, "DEBUG", "json", stream=out)
    await server.client.post("/container/namespaces", json={"name": "fam"})
    run_id = (await server.client.post("/container/runs", json={"group": "fam", "prompt": "fail"})).json()["runId"]
    with trio.fail_after(60):
        while (await server.client.get(f"/container/runs/{run_id}")).json()["status"] in {"queued", "running"}:
            await trio.sleep(0.1)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    tagged = [line for line in lines if line.get("runId") == run_id]
    assert tagged and all(line["group"] == "fam" for line in tagged)


async def test_the_server_process_writes_json_lines(tmp_path):
    env = cli_env(tmp_path, NANOCLAW_LOG_FORMAT="json", NANOCLAW_LOG_LEVEL="DEBUG")
    async with serve_process(tmp_path, env=env) as server:
        await server.assert_clean_stop()
    lines = [line for line in server.log().splitlines() if line.strip()]
    assert lines
    parsed = [json.loads(line) for line in lines]
    assert all({"time", "level", "logger", "message"} <= set(p) for p in parsed)
