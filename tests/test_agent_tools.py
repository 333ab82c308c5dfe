"""The runner's tools, run as a local python3 subprocess against the fake Anthropic API."""
from __future__ import annotations

import json
import os
import time

import trio

from fakes import serve_on_loopback
from nanoclaw.lifespan import answer_lifespan
from fakes.anthropic import text_reply, tool_reply
from test_agent_runner import fake, request, start, tool_result_sent, ws  # noqa: F401  (fixtures)


async def test_bash_runs_in_the_group_folder_and_answers_exit_code_and_output(ws, fake, start):
    fake.queue(tool_reply("bash", {"command": "echo made > made.txt; pwd; echo oops >&2; exit 3"}),
               text_reply("ran it"))
    runner = await start(ws, request("run something"))

    result = await runner.result()

    assert result["result"] == "ran it"
    assert (ws / "group" / "made.txt").read_text() == "made\n"
    sent = tool_result_sent(fake, 1)
    assert "is_error" not in sent
    assert sent["content"] == f"exit code: 3\n[stdout]\n{(ws / 'group').resolve()}\n\n[stderr]\noops\n"
    assert [(e["kind"], e["tool"]) for e in runner.events] == [("tool_start", "bash"), ("tool_end", "bash")]
    assert runner.events[1]["isError"] is False and runner.events[1]["durationMs"] >= 0


async def test_bash_past_its_timeout_is_killed_with_its_children_and_the_turn_goes_on(ws, fake, start):
    command = "sleep 60 & echo $! > child.pid; sleep 60"
    fake.queue(tool_reply("bash", {"command": command, "timeoutSecs": 1}), text_reply("gave up waiting"))
    runner = await start(ws, request("wait"))
    began = time.monotonic()

    result = await runner.result()

    assert result["status"] == "success" and result["result"] == "gave up waiting"
    assert time.monotonic() - began < 10
    sent = tool_result_sent(fake, 1)
    assert sent["is_error"] is True and "timed out after 1 s" in sent["content"]
    child = int((ws / "group" / "child.pid").read_text())
    state = None
    try:
        state = open(f"/proc/{child}/stat").read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        pass
    assert state in (None, "Z"), f"the background sleep {child} is still running ({state})"


async def test_bash_output_is_capped_with_head_and_tail_kept(ws, fake, start):
    fake.queue(tool_reply("bash", {"command": "echo START; head -c 100000 /dev/zero | tr '\\0' a; echo; echo END"}),
               text_reply("long"))
    runner = await start(ws, request("flood"))
    await runner.result()

    content = tool_result_sent(fake, 1)["content"]
    assert len(content) < 30_400
    assert "[stdout]\nSTART\naaa" in content and content.endswith("aaa\nEND\n")
    assert "bytes cut ...]" in content


async def test_edit_file_replaces_unique_text_and_fails_clearly_otherwise(ws, fake, start):
    fake.queue(
        tool_reply("write_file", {"path": "plan.md", "content": "eggs\nmilk\nmilk\n"}),
        tool_reply("edit_file", {"path": "plan.md", "oldText": "eggs", "newText": "bread"}),
        tool_reply("edit_file", {"path": "plan.md", "oldText": "milk", "newText": "tea"}),
        tool_reply("edit_file", {"path": "plan.md", "oldText": "cheese", "newText": "x"}),
        tool_reply("edit_file", {"path": "plan.md", "oldText": "milk", "newText": "tea", "replaceAll": True}),
        tool_reply("edit_file", {"path": "missing.md", "oldText": "a", "newText": "b"}),
        text_reply("edited"),
    )
    runner = await start(ws, request("edit"))
    await runner.result()

    assert (ws / "group" / "plan.md").read_text() == "bread\ntea\ntea\n"
    assert tool_result_sent(fake, 2)["content"] == "Replaced 1 occurrence in plan.md."
    not_unique, missing = tool_result_sent(fake, 3), tool_result_sent(fake, 4)
    assert not_unique["is_error"] and "occurs 2 times" in not_unique["content"]
    assert missing["is_error"] and "was not found" in missing["content"]
    assert tool_result_sent(fake, 5)["content"] == "Replaced 2 occurrences in plan.md."
    assert tool_result_sent(fake, 6)["is_error"] and "not a file" in tool_result_sent(fake, 6)["content"]


async def test_glob_grep_and_read_file_with_offset_and_limit(ws, fake, start):
    (ws / "group" / "src" / "deep").mkdir(parents=True)
    (ws / "group" / "src" / "a.py").write_text("x = 1\n# TODO: fix\n")
    (ws / "group" / "src" / "deep" / "b.py").write_text("y = 2\n")
    (ws / "group" / "notes.md").write_text("TODO in markdown\n")
    (ws / "global").mkdir()
    (ws / "global" / "rules.md").write_text("line1\nline2\nline3\nline4\n")
    fake.queue(
        tool_reply("glob", {"pattern": "**/*.py"}),
        tool_reply("grep", {"pattern": "TODO"}),
        tool_reply("grep", {"pattern": "TODO", "glob": "*.py"}),
        tool_reply("grep", {"pattern": "("}),
        tool_reply("read_file", {"path": "/workspace/global/rules.md", "offset": 2, "limit": 2}),
        tool_reply("glob", {"pattern": "/workspace/global/*.md"}),
        text_reply("found"),
    )
    runner = await start(ws, request("look"))
    await runner.result()

    assert tool_result_sent(fake, 1)["content"].split("\n") == ["src/a.py", "src/deep/b.py"]
    assert tool_result_sent(fake, 2)["content"].split("\n") == ["notes.md:1: TODO in markdown",
                                                               "src/a.py:2: # TODO: fix"]
    assert tool_result_sent(fake, 3)["content"] == "src/a.py:2: # TODO: fix"
    assert tool_result_sent(fake, 4)["is_error"] and "regular expression" in tool_result_sent(fake, 4)["content"]
    assert tool_result_sent(fake, 5)["content"] == (
        "     2\tline2\n     3\tline3\n[more lines follow; read on with offset=4]")
    assert tool_result_sent(fake, 6)["content"] == "/workspace/global/rules.md"


async def test_writes_outside_the_usable_folders_are_refused(ws, fake, start):
    fake.queue(
        tool_reply("write_file", {"path": "/workspace/ipc/tasks/forged.json", "content": "{}"}),
        tool_reply("write_file", {"path": "/etc/evil", "content": "x"}),
        tool_reply("edit_file", {"path": "../sessions/x.json", "oldText": "a", "newText": "b"}),
        text_reply("refused"),
    )
    runner = await start(ws, request("try"))
    await runner.result()

    for index in (1, 2, 3):
        refused = tool_result_sent(fake, index)
        assert refused["is_error"] and "outside the workspace folders" in refused["content"]
    assert os.listdir(ws / "ipc" / "tasks") == []


async def test_send_file_writes_a_send_file_request_with_the_container_path(ws, fake, start):
    fake.queue(tool_reply("write_file", {"path": "out/report.txt", "content": "numbers"}),
               tool_reply("send_file", {"path": "out/report.txt", "caption": "the report"}),
               tool_reply("send_file", {"path": "out/none.txt"}),
               text_reply("sent"))
    runner = await start(ws, request("send it"))
    await runner.result()

    [name] = os.listdir(ws / "ipc" / "messages")
    assert json.loads((ws / "ipc" / "messages" / name).read_text()) == {
        "type": "send_file", "chatJid": "tg:42", "path": "/workspace/group/out/report.txt",
        "caption": "the report"}
    assert tool_result_sent(fake, 3)["is_error"] is True


async def test_unknown_tools_and_bad_input_are_error_results_and_max_steps_ends_the_turn(ws, fake, start):
    fake.queue(tool_reply("no_such_tool", {}), tool_reply("bash", {"command": 7}),
               tool_reply("bash", {"command": "echo never > never.txt"}))
    runner = await start(ws, request("loop", agent={"maxSteps": 2}))

    result = await runner.result()

    assert result["status"] == "success" and "limit of 2 tool steps" in result["result"]
    assert "unknown tool" in tool_result_sent(fake, 1)["content"]
    assert "command must be a non-empty string" in tool_result_sent(fake, 2)["content"]
    assert len(fake.requests) == 3 and not (ws / "group" / "never.txt").exists()
    saved = json.loads(next((ws / "sessions").iterdir()).read_text())["messages"]
    assert [m["role"] for m in saved[-2:]] == ["user", "assistant"]  # the history stays well-formed


PAGE = (b"<!doctype html><html><head><title>Opening hours</title><style>p{color:red}</style>"
        b"<script>var secret = 1;</script></head><body><h1>Shop</h1><p>Open 9&ndash;5</p>"
        b"<ul><li>Mon</li><li>Tue</li></ul></body></html>")


async def page(scope, receive, send):
    if scope["type"] == "lifespan":
        await answer_lifespan(receive, send)
        return
    body, kind, status = PAGE, b"text/html; charset=utf-8", 200
    if scope["path"] == "/plain":
        body, kind = b"just text", b"text/plain"
    elif scope["path"] == "/huge":
        body, kind = b"y" * (11 * 1024 * 1024), b"text/plain"
    elif scope["path"] == "/gone":
        body, kind, status = b"no such page", b"text/plain", 404
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", kind)]})
    await send({"type": "http.response.body", "body": body})


async def test_web_fetch_answers_readable_text_of_a_loopback_page(ws, fake, start, nursery):
    url = await serve_on_loopback(nursery, page)
    fake.queue(tool_reply("web_fetch", {"url": url + "/shop"}), tool_reply("web_fetch", {"url": url + "/plain"}),
               tool_reply("web_fetch", {"url": url + "/gone"}), tool_reply("web_fetch", {"url": "file:///etc/passwd"}),
               tool_reply("web_fetch", {"url": url + "/shop", "maxChars": 100}), text_reply("fetched"))
    runner = await start(ws, request("fetch"))
    with trio.fail_after(20):
        await runner.result()

    text = tool_result_sent(fake, 1)["content"]
    assert text.startswith(f"URL: {url}/shop\nStatus: 200\nContent-Type: text/html\n\n# Opening hours")
    assert "Shop\n" in text and "Open 9\u20135" in text and "Mon\n" in text
    assert "secret" not in text and "color" not in text
    assert tool_result_sent(fake, 2)["content"].endswith("\n\njust text")
    gone = tool_result_sent(fake, 3)
    assert gone["is_error"] and "HTTP 404" in gone["content"] and "no such page" in gone["content"]
    assert tool_result_sent(fake, 4)["is_error"] and "http://" in tool_result_sent(fake, 4)["content"]
    assert "Content-Type" in tool_result_sent(fake, 5)["content"]


async def test_a_background_process_outlives_its_step_and_its_output_does_not_block(ws, fake, start):
    fake.queue(tool_reply("bash", {"command": "sleep 30 > /dev/null 2>&1 & echo $! > bg.pid; echo started"}),
               tool_reply("bash", {"command": "kill -0 $(cat bg.pid) && echo alive; kill $(cat bg.pid)"}),
               tool_reply("bash", {"command": "sleep 3 & echo holding"}),
               text_reply("checked"))
    runner = await start(ws, request("background"))
    began = time.monotonic()

    assert (await runner.result())["result"] == "checked"

    assert tool_result_sent(fake, 1)["content"] == "exit code: 0\n[stdout]\nstarted\n"
    assert tool_result_sent(fake, 2)["content"] == "exit code: 0\n[stdout]\nalive\n"
    assert tool_result_sent(fake, 3)["content"] == "exit code: 0\n[stdout]\nholding\n"
    assert time.monotonic() - began < 8


async def test_text_next_to_a_tool_call_is_a_progress_event(ws, fake, start):
    fake.queue(tool_reply("bash", {"command": "true"}, text="Let me check."), text_reply("Checked."))
    runner = await start(ws, request("check"))

    assert (await runner.result())["result"] == "Checked."

    assert [e["kind"] for e in runner.events] == ["text", "tool_start", "tool_end"]
    assert runner.events[0]["text"] == "Let me check."
    assert fake.requests[1].body["messages"][1]["content"][0] == {"type": "text", "text": "Let me check."}


async def test_an_empty_text_block_is_not_sent_back(ws, fake, start):
    reply = tool_reply("bash", {"command": "true"})
    reply.content.insert(0, {"type": "text", "text": ""})
    fake.queue(reply, text_reply("Done."))
    runner = await start(ws, request("go"))

    assert (await runner.result())["result"] == "Done."

    [block] = fake.requests[1].body["messages"][1]["content"]
    assert block["type"] == "tool_use"


async def test_web_fetch_stops_reading_at_10_mib(ws, fake, start, nursery):
    url = await serve_on_loopback(nursery, page)
    fake.queue(tool_reply("web_fetch", {"url": url + "/huge", "maxChars": 1000}), text_reply("big"))
    runner = await start(ws, request("fetch big"))
    await runner.result(timeout=30)

    text = tool_result_sent(fake, 1)["content"]
    assert "\n\n" + "y" * 1000 + "\n[the download was cut at 10 MiB]" in text
    assert f"[... {10 * 1024 * 1024 - 1000} more characters; raise maxChars to see more]" in text
