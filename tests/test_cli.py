"""The command line (issue 2, item 2): help, flags, environment, `python -m nanoclaw`, the banner."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import start_server
from nanoclaw import __version__
from nanoclaw.config import ConfigError, load_settings
from serverproc import BIN, NANOCLAW, cli_env, create_api_key, run_cli

COMMANDS = [[], ["serve"], ["api-key"], ["api-key", "create"], ["api-key", "list"], ["api-key", "revoke"]]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "nanoclaw")
async def test_help_works_for_every_command(tmp_path, command):
    done = await run_cli(*command, "--help", env=cli_env(tmp_path))
    assert done.returncode == 0, done.stderr
    out = done.stdout.decode()
    assert out.startswith(f"usage: nanoclaw {' '.join(command)}".rstrip())
    if command and command[-1] in {"serve", "create", "list", "revoke"}:
        for flag in ("--host", "--port", "--data-dir", "--config-dir"):
            assert flag in out


async def test_serve_help_names_every_environment_variable(tmp_path):
    out = (await run_cli("serve", "--help", env=cli_env(tmp_path))).stdout.decode()
    for var in ("NANOCLAW_HOST", "NANOCLAW_PORT", "NANOCLAW_DATA_DIR", "NANOCLAW_CONFIG_DIR", "NANOCLAW_ALLOW_INSECURE"):
        assert var in out
    assert "--allow-insecure" in out


async def test_python_dash_m_nanoclaw_is_the_same_cli_as_the_script(tmp_path):
    script = await run_cli("--help", env=cli_env(tmp_path), command=[str(BIN / "nanoclaw")])
    module = await run_cli("--help", env=cli_env(tmp_path), command=NANOCLAW)
    assert script.returncode == module.returncode == 0
    assert script.stdout == module.stdout


async def test_version_flag_prints_the_version(tmp_path):
    done = await run_cli("--version", env=cli_env(tmp_path))
    assert done.returncode == 0
    assert done.stdout.decode().strip() == f"nanoclaw {__version__}"


async def test_no_command_is_a_usage_error(tmp_path):
    done = await run_cli(env=cli_env(tmp_path))
    assert done.returncode == 2
    assert "usage:" in done.stderr.decode()


async def test_create_without_name_is_a_usage_error(tmp_path):
    done = await run_cli("api-key", "create", env=cli_env(tmp_path))
    assert done.returncode == 2
    assert "--name" in done.stderr.decode()


async def test_an_invalid_environment_value_is_a_clear_error_with_exit_code_2(tmp_path):
    done = await run_cli("api-key", "list", env=cli_env(tmp_path, NANOCLAW_PORT="lots"))
    assert done.returncode == 2
    assert "NANOCLAW_PORT" in done.stderr.decode()


async def test_api_key_create_prints_the_key_once(tmp_path):
    done = await run_cli("api-key", "create", "--name", "laptop", env=cli_env(tmp_path))
    assert done.returncode == 0
    lines = done.stdout.decode().splitlines()
    assert "laptop" in lines[0] and "only this once" in lines[0]
    assert lines[1].startswith("nck_") and len(lines[1]) > 40


async def test_api_key_list_without_keys_says_auth_is_off(tmp_path):
    done = await run_cli("api-key", "list", env=cli_env(tmp_path))
    assert done.returncode == 0
    assert "auth is off" in done.stdout.decode()


async def test_api_key_commands_honour_the_data_dir_flag(tmp_path):
    env = cli_env(tmp_path)
    del env["NANOCLAW_DATA_DIR"]
    elsewhere = tmp_path / "elsewhere"
    created = await run_cli("api-key", "create", "--name", "flagged", "--data-dir", str(elsewhere), env=env,
                            cwd=tmp_path)
    assert created.returncode == 0
    assert (elsewhere / "nanoclaw.db").exists()
    assert not (tmp_path / "data").exists()
    listed = await run_cli("api-key", "list", env=cli_env(tmp_path, NANOCLAW_DATA_DIR=str(elsewhere)))
    assert "flagged" in listed.stdout.decode()


async def test_a_flag_wins_over_the_environment(tmp_path):
    env = cli_env(tmp_path, NANOCLAW_DATA_DIR=str(tmp_path / "from-env"))
    await run_cli("api-key", "create", "--name", "k", "--data-dir", str(tmp_path / "from-flag"), env=env)
    assert (tmp_path / "from-flag" / "nanoclaw.db").exists()
    assert not (tmp_path / "from-env").exists()


async def test_api_key_commands_accept_every_server_flag(tmp_path):
    done = await run_cli("api-key", "list", "--host", "127.0.0.1", "--port", "1", "--data-dir",
                         str(tmp_path / "data"), "--config-dir", str(tmp_path / "config"), env=cli_env(tmp_path))
    assert done.returncode == 0, done.stderr


async def test_the_data_dir_defaults_to_data_in_the_working_directory(tmp_path):
    env = cli_env(tmp_path)
    del env["NANOCLAW_DATA_DIR"]
    await run_cli("api-key", "create", "--name", "k", env=env, cwd=tmp_path)
    assert (tmp_path / "data" / "nanoclaw.db").exists()


# -- settings ---------------------------------------------------------------------

def test_settings_defaults_match_the_issue(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    settings = load_settings({})
    assert settings.host == "127.0.0.1"
    assert settings.port == 55765
    assert settings.data_dir == tmp_path / "data"
    assert settings.config_dir == tmp_path / "home" / ".config" / "nanoclaw"
    assert settings.allow_insecure is False


def test_settings_come_from_the_environment(tmp_path):
    settings = load_settings({"NANOCLAW_HOST": "::1", "NANOCLAW_PORT": "8080", "NANOCLAW_DATA_DIR": str(tmp_path / "d"),
                              "NANOCLAW_CONFIG_DIR": str(tmp_path / "c"), "NANOCLAW_ALLOW_INSECURE": "true"})
    assert (settings.host, settings.port) == ("::1", 8080)
    assert (settings.data_dir, settings.config_dir) == (tmp_path / "d", tmp_path / "c")
    assert settings.allow_insecure is True


def test_flags_override_the_environment(tmp_path):
    settings = load_settings({"NANOCLAW_PORT": "8080"}, port=9090)
    assert settings.port == 9090


def test_a_bad_environment_value_is_a_config_error():
    with pytest.raises(ConfigError, match="NANOCLAW_PORT"):
        load_settings({"NANOCLAW_PORT": "eighty"})


# -- the start-up banner ----------------------------------------------------------

async def test_startup_prints_the_url_the_docs_url_and_auth_off(server):
    lines = server.output.getvalue().splitlines()
    assert any(line.endswith(f"serving on {server.url}") for line in lines)
    assert f"API docs: {server.url}/docs" in lines
    assert any(line.startswith("Auth: off") for line in lines)


async def test_startup_says_auth_is_on_when_a_key_exists(nursery, settings, tmp_path):
    await create_api_key(tmp_path)
    server = await start_server(nursery, settings)
    assert any(line.startswith("Auth: on") for line in server.output.getvalue().splitlines())
    await server.client.aclose()


async def test_the_printed_docs_url_answers(server):
    docs_line = next(line for line in server.output.getvalue().splitlines() if line.startswith("API docs: "))
    answer = await server.client.get(docs_line.removeprefix("API docs: "))
    assert answer.status_code == 200
    assert 'id="swagger-ui"' in answer.text and "/docs/reference" in answer.text
    dashboard_line = next(line for line in server.output.getvalue().splitlines() if line.startswith("Dashboard: "))
    assert (await server.client.get(dashboard_line.removeprefix("Dashboard: "))).status_code == 200


def test_the_console_script_is_installed():
    assert Path(BIN / "nanoclaw").exists()
