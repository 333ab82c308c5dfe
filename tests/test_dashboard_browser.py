"""The dashboard in a real browser: Playwright driving Debian's Chromium headless (never downloaded).

The server runs in-process (real clock) with the fake container engine, so on-demand runs finish
at once; the sync Playwright API runs on a worker thread. Every request the page makes is recorded: none may
leave for another host. Screenshots of each view go to docs/dashboard/ when
NANOCLAW_SCREENSHOTS=1.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import pytest
import trio

from conftest import make_settings, start_server
from fake_runtime import FakeRuntime
from serverproc import create_api_key

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(__file__).parent.parent / "docs" / "dashboard"
TIMEOUT_MS = 15_000


def _browser_problem() -> str | None:
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        return "chromium is not installed (apt-get install chromium; .ci/setup-browser.sh)"
    try:
        import playwright.sync_api  # noqa: F401  (only whether it is installed)
    except ImportError:
        return "the playwright package is not installed"
    return None


def _require_browser() -> None:
    problem = _browser_problem()
    if problem:
        if os.environ.get("NANOCLAW_REQUIRE_DOCKER") == "1":
            pytest.fail(f"NANOCLAW_REQUIRE_DOCKER=1 but {problem}")
        print(f"skipping: {problem}")
        pytest.skip(problem)


@pytest.fixture
async def live(nursery, tmp_path):
    """A real server (fake container engine, real clock), an API key, and the URL."""
    _require_browser()
    _, key = await create_api_key(tmp_path, "browser")
    server = await start_server(nursery, make_settings(tmp_path), runtime=FakeRuntime(nursery))
    yield server.url, key
    await server.client.aclose()


def in_browser(scenario, url: str, key: str) -> None:
    """Run scenario(browser, url, key, client) with the sync Playwright API (on a worker thread)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p, httpx.Client(base_url=url + "/api/v1", headers={"X-API-Key": key},
                                              timeout=30) as client:
        executable = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
        browser = p.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"])
        try:
            scenario(browser, url, key, client)
        finally:
            browser.close()


def _page(browser, url, requests):
    page = browser.new_page(viewport={"width": 1280, "height": 860})
    page.set_default_timeout(TIMEOUT_MS)
    page.on("request", lambda request: requests.append(request.url))
    page.goto(url + "/dashboard/")
    return page


def _login(page, key):
    page.fill("#login-key", key)
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#app:not([hidden])")
    page.wait_for_selector("#live.ok")


def _shot(page, name):
    if os.environ.get("NANOCLAW_SCREENSHOTS") == "1":
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


async def test_a_wrong_key_shows_a_clear_message_and_nothing_is_stored(live):
    await trio.to_thread.run_sync(in_browser, wrong_key, *live)


def wrong_key(browser, url, key, client):
    requests: list[str] = []
    page = _page(browser, url, requests)
    page.wait_for_selector("#login:not([hidden])")
    page.fill("#login-key", "nck_wrong")
    page.click("#login-form button[type=submit]")
    page.wait_for_function("document.getElementById('login-error').textContent.length > 0")
    message = page.text_content("#login-error")
    assert "refused" in message and "401" in message
    assert page.evaluate("sessionStorage.getItem('nanoclaw.apiKey')") is None
    _shot(page, "login")
    assert requests and all(r.startswith(url + "/") for r in requests), requests


async def test_the_console_works_live_through_the_public_api(live):
    await trio.to_thread.run_sync(in_browser, console_scenario, *live)


def console_scenario(browser, url, key, client):
    requests: list[str] = []
    page = _page(browser, url, requests)
    _login(page, key)
    assert page.evaluate("sessionStorage.getItem('nanoclaw.apiKey')") == key
    page.wait_for_selector("text=Runtime")

    # A namespace created through the API appears without a reload.
    page.click("a[href='#groups']")
    page.wait_for_selector("text=Namespaces")
    assert client.post("/container/namespaces", json={"name": "family"}).status_code == 201
    page.wait_for_selector("tr[data-group='family']")
    page.click("tr[data-group='family']")
    page.wait_for_selector("#instructions")
    page.fill("#instructions", "Be brief.")
    page.click("text=Save instructions")
    page.wait_for_selector("#flash:has-text('Save instructions: done')")
    assert client.get("/container/namespaces/family/instructions").json()["instructions"] == "Be brief."
    _shot(page, "groups")

    # An on-demand run started from the dashboard shows its result live.
    page.click("a[href='#runs']")
    page.wait_for_selector("#run-prompt")
    page.select_option("#run-group", "family")
    page.fill("#run-prompt", "steps 2")
    page.click("form:has(#run-prompt) button[type=submit]")
    page.wait_for_selector("#run-results pre:has-text('stepped')")
    page.wait_for_selector(".card:has(#run-results) .badge.ok:has-text('success')")
    steps = page.text_content(".card:has(#run-results)")
    assert '"kind":"tool_start"' in steps.replace(" ", "")
    # A run that takes 2 s: its result arrives through /api/v1/events (the periodic refresh is 15 s).
    page.fill("#run-prompt", "once 2")
    page.click("form:has(#run-prompt) button[type=submit]")
    page.wait_for_selector(".card:has(#run-results) .badge:has-text('running')", timeout=5000)
    page.wait_for_selector("#run-results pre:has-text('done: once 2')", timeout=8000)
    page.click("tr[data-run] >> nth=1")  # back to the first run
    page.wait_for_selector("#run-results pre:has-text('stepped')")
    runs = client.get("/container/run-history").json()["runs"]
    assert runs[1]["status"] == "success" and runs[1]["results"] == ["stepped"]
    _shot(page, "runs")

    # Pausing a schedule in the dashboard shows in the API.
    schedule = client.post("/container/schedules", json={
        "name": "morning", "group": "family", "prompt": "once 0", "schedule": {"type": "cron", "value": "0 8 * * *"},
    }).json()
    page.click("a[href='#schedules']")
    row = f"tr[data-schedule='{schedule['id']}']"
    page.wait_for_selector(row)
    page.click(f"{row} button:has-text('Pause')")
    page.wait_for_selector(f"{row} button:has-text('Resume')")
    got = client.get(f"/container/schedules/{schedule['id']}").json()
    assert got["enabled"] is False and got["status"] == "paused"
    page.click(f"{row} button:has-text('Logs')")
    page.wait_for_selector("text=Logs: morning")
    _shot(page, "schedules")

    page.click("a[href='#channels']")
    page.wait_for_selector("text=Recent chats")
    _shot(page, "channels")

    page.click("a[href='#proxy']")
    page.wait_for_selector("#mapping-name")
    page.fill("#mapping-name", "upstream")
    page.fill("#mapping-upstream", "https://api.example.invalid")
    page.fill("#mapping-credential", "sk-test-secret-123456")
    page.click("form:has(#mapping-name) button[type=submit]")
    page.wait_for_selector("tr[data-mapping='upstream']")
    assert [m["name"] for m in client.get("/container/credential-proxy/mappings").json()["mappings"]] == ["upstream"]
    assert "sk-test-secret-123456" not in page.content()
    _shot(page, "proxy")

    page.click("a[href='#audit']")
    page.wait_for_selector("text=Audit log")
    page.select_option("#audit-severity", "info")
    page.wait_for_selector("td:has-text('namespace family created')")
    _shot(page, "audit")

    page.click("a[href='#overview']")
    page.wait_for_selector("#event-log div:has-text('run.finished')")
    _shot(page, "overview")

    # Nothing left for another host: every request went to this server.
    foreign = [r for r in requests if not r.startswith(url + "/")]
    assert not foreign, foreign
    assert any(r == url + "/api/v1/events" for r in requests)
    assert not any("X-API-Key" in r or key in r for r in requests)  # the key is never in a URL
