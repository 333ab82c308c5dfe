"""The runner's providers (Anthropic and OpenAI-compatible), usage, retries, compaction and images."""
from __future__ import annotations

import base64
import json

import pytest

from fakes import openai
from fakes.anthropic import error_reply, text_reply, tool_reply
from test_agent_runner import API_KEY, fake, follow_up, request, start, tool_result_sent, ws  # noqa: F401

PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")


@pytest.fixture
async def oai(nursery):
    return await nursery.start(openai.serve_fake_openai)


def oai_env(oai, key: str = "", prefix: str = "OPENAI") -> dict:
    return {f"{prefix}_BASE_URL": oai.url + "/v1", f"{prefix}_API_KEY": key}


async def test_openai_streaming_tool_call_round_trip_with_usage_and_no_key(ws, oai, start):
    oai.queue(openai.tool_reply("bash", {"command": "echo hello > out.txt; echo printed-$((6*7))"}, id="call_1",
                                usage={"prompt_tokens": 100, "completion_tokens": 7}),
              openai.text_reply("The file is written.", usage={"prompt_tokens": 130, "completion_tokens": 5,
                                                               "prompt_tokens_details": {"cached_tokens": 30}}))
    runner = await start(ws, request("write a file", agent={"provider": "openai", "model": "llama3.2"}),
                         env=oai_env(oai))

    result = await runner.result()

    assert result["status"] == "success" and result["result"] == "The file is written."
    assert result["model"] == "llama3.2"
    assert result["usage"] == {"inputTokens": 200, "outputTokens": 12, "cacheReadTokens": 30,
                               "cacheCreationTokens": 0}
    assert (ws / "group" / "out.txt").read_text() == "hello\n"
    first, second = oai.completions
    assert first.path == "/v1/chat/completions" and "authorization" not in first.headers
    assert first.body["stream"] is True and first.body["stream_options"] == {"include_usage": True}
    assert first.body["model"] == "llama3.2" and first.body["messages"][-1] == {"role": "user",
                                                                               "content": "write a file"}
    [bash] = [t for t in first.body["tools"] if t["function"]["name"] == "bash"]
    assert bash["type"] == "function" and bash["function"]["parameters"]["required"] == ["command"]
    call, answer = second.body["messages"][-2:]
    assert call["tool_calls"] == [{"id": "call_1", "type": "function", "function": {
        "name": "bash", "arguments": json.dumps({"command": "echo hello > out.txt; echo printed-$((6*7))"})}}]
    assert answer["role"] == "tool" and answer["tool_call_id"] == "call_1"
    assert "printed-42" in answer["content"]


async def test_openai_mapping_name_and_key_and_a_server_that_does_not_stream(ws, oai, start):
    oai.streaming = False
    oai.queue(openai.tool_reply("write_file", '{"path": "a.txt", "content": "A"}'),
              openai.tool_reply("write_file", "{not json"))
    agent = {"provider": "openai", "model": "qwen", "mapping": "local-llm"}
    runner = await start(ws, request("what is 3+4?", agent=agent), env=oai_env(oai, API_KEY, "LOCAL_LLM"))

    result = await runner.result()

    assert result["status"] == "success" and (ws / "group" / "a.txt").read_text() == "A"
    assert oai.completions[0].headers["authorization"] == f"Bearer {API_KEY}"
    assert "ERROR: " in oai.completions[2].body["messages"][-1]["content"]  # bad arguments: a tool error
    assert result["result"].startswith("Tool result: ERROR")
    assert API_KEY not in runner.output


async def test_openai_without_a_base_url_is_a_clear_error(ws, start):
    runner = await start(ws, request("hi", agent={"provider": "openai", "mapping": "ollama"}))

    result = await runner.result()

    assert result["status"] == "error" and "OLLAMA_BASE_URL" in result["error"]
    assert await runner.exit_code() == 1


async def test_anthropic_usage_is_summed_over_the_turn_including_cache_tokens(ws, fake, start):
    usage = {"input_tokens": 10, "output_tokens": 4, "cache_read_input_tokens": 3, "cache_creation_input_tokens": 2}
    fake.queue(tool_reply("bash", {"command": "true"}, usage=usage), text_reply("ok", usage=usage))
    runner = await start(ws, request("go"))

    result = await runner.result()

    assert result["usage"] == {"inputTokens": 20, "outputTokens": 8, "cacheReadTokens": 6,
                               "cacheCreationTokens": 4}
    assert fake.requests[1].body["messages"][1]["content"][0]["input"] == {"command": "true"}


async def test_anthropic_answer_without_a_stream_is_read_too(ws, fake, start):
    fake.streaming = False
    runner = await start(ws, request("what is 2+2?"))

    result = await runner.result()

    assert result["result"] == "2+2 = 4" and result["usage"]["inputTokens"] > 0


async def test_429_and_529_are_retried_after_retry_after_then_given_up(ws, fake, start):
    fake.queue(error_reply(429, "slow down", retry_after=0), error_reply(529, "busy", retry_after=0),
               text_reply("made it"))
    runner = await start(ws, request("hi"))
    assert (await runner.result())["result"] == "made it"
    assert len(fake.requests) == 3

    fake.queue(*[error_reply(529, "still busy", retry_after=0)] * 6)
    follow_up(ws, "again")
    result = await runner.result()
    assert result["status"] == "error" and "HTTP 529 (after 5 tries)" in result["error"]
    assert "still busy" in result["error"] and len(fake.requests) == 3 + 5
    assert await runner.exit_code() == 1


async def test_a_4xx_and_a_broken_stream_end_the_turn_with_a_clear_error(ws, fake, start):
    fake.queue(error_reply(400, "max_tokens: too large"))
    runner = await start(ws, request("hi"))
    result = await runner.result()
    assert result["status"] == "error" and "HTTP 400" in result["error"] and "too large" in result["error"]
    assert len(fake.requests) == 1

    fake.queue(text_reply("half an answer", broken=True))
    broken = await start(ws, request("hi"))
    result = await broken.result()
    assert result["status"] == "error" and "malformed stream" in result["error"]
    assert await broken.exit_code() == 1


async def test_history_over_the_budget_is_compacted_by_a_summary_call(ws, fake, start):
    runner = await start(ws, request("remember " + "a" * 4000, agent={"maxContextTokens": 4000}))
    first = await runner.result()
    assert first["status"] == "success" and len(fake.requests) == 1
    fake.queue(text_reply("The user asked to remember many a's.", usage={"input_tokens": 1000, "output_tokens": 20}),
               text_reply("Noted.", usage={"input_tokens": 300, "output_tokens": 3}))

    follow_up(ws, "and now " + "b" * 4000)
    second = await runner.result()

    assert second["result"] == "Noted."
    summary_call, next_call = fake.requests[1], fake.requests[2]
    assert "tools" not in summary_call.body and "Summarise the conversation" in json.dumps(summary_call.body)
    assert "a" * 100 in json.dumps(summary_call.body)
    messages = next_call.body["messages"]
    assert messages[0]["content"].startswith("[Summary of the earlier conversation]\n"
                                             "The user asked to remember many a's.\n\nand now bbb")
    assert "a" * 100 not in json.dumps(messages) and len(json.dumps(next_call.body)) // 4 < 4000
    assert second["usage"] == {"inputTokens": 1300, "outputTokens": 23, "cacheReadTokens": 0,
                               "cacheCreationTokens": 0}
    assert [e["kind"] for e in runner.events] == ["compaction"]


async def test_image_attachments_become_image_blocks_once_and_paths_are_listed(ws, fake, oai, start):
    inbox = ws / "group" / "inbox"
    inbox.mkdir()
    (inbox / "cat.png").write_bytes(PNG)
    (inbox / "doc.pdf").write_bytes(b"%PDF-1.4")
    attachments = [{"kind": "image", "name": "cat.png", "mimeType": "image/png", "size": len(PNG),
                    "path": "/workspace/group/inbox/cat.png"},
                   {"kind": "document", "name": "doc.pdf", "mimeType": "application/pdf", "size": 8,
                    "path": "/workspace/group/inbox/doc.pdf"}]
    runner = await start(ws, request("what is this?", "pics", attachments=attachments))
    await runner.result()

    text, image = fake.requests[0].body["messages"][0]["content"]
    assert "what is this?" in text["text"] and "/workspace/group/inbox/cat.png (image/png, cat.png)" in text["text"]
    assert "/workspace/group/inbox/doc.pdf (application/pdf, doc.pdf)" in text["text"]
    assert image == {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                 "data": base64.b64encode(PNG).decode()}}
    assert base64.b64encode(PNG).decode() not in (ws / "sessions" / "pics.json").read_text()

    no_vision = await start(ws, request("again", attachments=attachments, agent={"vision": False}))
    await no_vision.result()
    assert isinstance(fake.requests[1].body["messages"][0]["content"], str)

    via_openai = await start(ws, request("and now?", attachments=attachments[:1], agent={"provider": "openai"}),
                             env=oai_env(oai))
    await via_openai.result()
    parts = oai.completions[0].body["messages"][-1]["content"]
    assert parts[1] == {"type": "image_url", "image_url": {"url": "data:image/png;base64,"
                                                           + base64.b64encode(PNG).decode()}}


async def test_a_follow_up_with_an_image_attachment_sends_the_image(ws, fake, start):
    (ws / "group" / "pic.png").write_bytes(PNG)
    runner = await start(ws, request("hello"))
    await runner.result()

    message = {"type": "message", "text": "and this?", "attachments": [
        {"kind": "image", "name": "pic.png", "mimeType": "image/png", "size": len(PNG),
         "path": "/workspace/group/pic.png"}]}
    (ws / "ipc" / "input" / ".1.json.tmp").write_text(json.dumps(message))
    (ws / "ipc" / "input" / ".1.json.tmp").rename(ws / "ipc" / "input" / "1.json")
    await runner.result()

    text, image = fake.requests[1].body["messages"][-1]["content"]
    assert text["text"].startswith("and this?\n\nAttachments") and "/workspace/group/pic.png" in text["text"]
    assert image["source"]["data"] == base64.b64encode(PNG).decode()


@pytest.mark.parametrize("agent, problem", [
    ({"provider": "gemini"}, "agent.provider must be one of anthropic, openai"),
    ({"maxSteps": 0}, "agent.maxSteps must be a positive whole number"),
    ({"maxTokens": "lots"}, "agent.maxTokens must be a positive whole number"),
    ({"mapping": 5}, "agent.mapping must be a string"),
    ("openai", "agent must be a JSON object"),
])
async def test_a_bad_agent_config_is_a_clear_error_before_any_model_call(ws, fake, start, agent, problem):
    runner = await start(ws, request("hi", agent=agent))

    result = await runner.result()

    assert result["status"] == "error" and problem in result["error"]
    assert await runner.exit_code() == 1 and fake.requests == []


async def test_compaction_inside_one_turn_keeps_each_tool_call_with_its_result(ws, fake, start):
    big = "python3 -c \"print('x' * 6000)\""
    fake.queue(tool_reply("bash", {"command": big}, id="toolu_1"), tool_reply("bash", {"command": big}, id="toolu_2"),
               text_reply("Two big outputs so far."), text_reply("done"))
    runner = await start(ws, request("make output", agent={"maxContextTokens": 3000}))

    result = await runner.result()

    assert result["result"] == "done"
    summary_call, next_call = fake.requests[2], fake.requests[3]
    assert "tools" not in summary_call.body
    first, call, answer = next_call.body["messages"]
    assert first == {"role": "user", "content": "[Summary of the earlier conversation]\nTwo big outputs so far."}
    assert [b["id"] for b in call["content"] if b["type"] == "tool_use"] == ["toolu_2"]
    assert [b["tool_use_id"] for b in answer["content"]] == ["toolu_2"]
