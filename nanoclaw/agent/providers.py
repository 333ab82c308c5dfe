"""Model providers: Anthropic Messages and OpenAI-compatible Chat Completions, both streamed.

The conversation is kept in the Anthropic shape (content blocks: text, image, tool_use,
tool_result); the OpenAI provider converts on the way out and back. Both reach the model
through the credential proxy: ``<PREFIX>_BASE_URL`` / ``<PREFIX>_API_KEY`` of the
mapping (PREFIX = the mapping name upper-cased, other characters than A-Z/0-9 as '_').
"""
from __future__ import annotations

import http.client
import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping

API_TIMEOUT = 300
RETRIES = 4          # 429 / 529 are retried at most this often ...
RETRY_BUDGET = 60.0  # ... and for at most this many seconds of waiting in all
DEFAULT_MODELS = {"anthropic": "claude-sonnet-4-5", "openai": "gpt-4.1-mini"}
USAGE_KEYS = ("inputTokens", "outputTokens", "cacheReadTokens", "cacheCreationTokens")


class ProviderError(Exception):
    """Ends the turn with an error result."""


def env_prefix(name: str) -> str:
    """As the credential proxy names a mapping's variables (nanoclaw/proxy/_mappings.py)."""
    return re.sub(r"[^A-Z0-9]", "_", name.upper())


def new_usage() -> dict:
    return dict.fromkeys(USAGE_KEYS, 0)


def add_usage(total: dict, more: dict) -> None:
    for key in USAGE_KEYS:
        total[key] += int(more.get(key) or 0)


class Provider:
    name = ""

    def __init__(self, config: Mapping, env: Mapping[str, str]) -> None:
        mapping = config.get("mapping") or self.name
        if not isinstance(mapping, str):
            raise ProviderError("agent.mapping must be a string")
        prefix = env_prefix(mapping)
        base = env.get(f"{prefix}_BASE_URL") or (env.get("ANTHROPIC_BASE_URL") if self.name == "anthropic" else None)
        if self.name == "anthropic" and not base:
            base = "https://api.anthropic.com"
        if not base:
            raise ProviderError(f"no {prefix}_BASE_URL in the container: add a credential proxy mapping "
                                f"named {mapping!r} (its upstream is the provider's base URL)")
        self.base = base.rstrip("/")
        self.key = env.get(f"{prefix}_API_KEY") or (env.get("ANTHROPIC_API_KEY", "") if self.name == "anthropic"
                                                    else "")
        self.model = config.get("model") or env.get(f"{self.name.upper()}_MODEL") or DEFAULT_MODELS[self.name]
        self.max_tokens = config.get("maxTokens") or 8192
        if not isinstance(self.model, str):
            raise ProviderError("agent.model must be a string")
        if not isinstance(self.max_tokens, int) or isinstance(self.max_tokens, bool) or self.max_tokens <= 0:
            raise ProviderError("agent.maxTokens must be a positive whole number")
        # The base URL already points where the host wants us to go (the credential proxy).
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    # -- one call ---------------------------------------------------------------

    def create(self, system: str, messages: list, tools: list[dict]) -> tuple[list[dict], dict]:
        """One model call -> (assistant content blocks, usage)."""
        raise NotImplementedError

    def _post(self, url: str, body: dict, headers: dict) -> tuple[str, Iterator[bytes] | bytes]:
        """POST with bounded retries of 429/529 -> (content type, the line iterator or the whole body)."""
        data = json.dumps(body).encode()
        waited = 0.0
        for attempt in range(RETRIES + 1):
            request = urllib.request.Request(url, data=data, method="POST",
                                             headers={"content-type": "application/json", **headers})
            try:
                response = self._opener.open(request, timeout=API_TIMEOUT)
            except urllib.error.HTTPError as exc:
                detail = _error_detail(exc.read())
                wait = _retry_after(exc.headers, attempt)
                if exc.code in (429, 529) and attempt < RETRIES and waited + wait <= RETRY_BUDGET:
                    waited += wait
                    time.sleep(wait)
                    continue
                tries = f" (after {attempt + 1} tries)" if attempt else ""
                raise ProviderError(
                    self._redact(f"{self.name} API answered HTTP {exc.code}{tries}: {detail}")) from None
            except (urllib.error.URLError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                raise ProviderError(self._redact(f"could not reach the {self.name} API at {url}: {reason}")) from None
            kind = response.headers.get_content_type()
            if kind == "text/event-stream":
                return kind, _lines(response)
            try:
                with response:
                    return kind, response.read()
            except (OSError, http.client.HTTPException) as exc:
                raise ProviderError(f"the {self.name} API answer broke off: {exc!r}") from None
        raise AssertionError("unreachable")

    def _redact(self, text: str) -> str:
        return text.replace(self.key, "[redacted]") if self.key else text

    def _json(self, raw: bytes) -> dict:
        try:
            value = json.loads(raw)
        except ValueError:
            raise ProviderError(f"the {self.name} API answered with a body that is not JSON") from None
        if not isinstance(value, dict):
            raise ProviderError(f"the {self.name} API answered with JSON that is not an object")
        return value


def _lines(response) -> Iterator[bytes]:
    try:
        with response:
            yield from response
    except (OSError, http.client.HTTPException) as exc:
        raise ProviderError(f"the stream broke off: {exc!r}") from None


def sse_events(lines: Iterator[bytes]) -> Iterator[tuple[str, str]]:
    """(event name, data) per Server-Sent Event."""
    name, data = "", []
    for raw in lines:
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if not line:
            if data:
                yield name, "\n".join(data)
            name, data = "", []
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        elif line.startswith("event:"):
            name = line[6:].strip()
    if data:
        yield name, "\n".join(data)


def _retry_after(headers, attempt: int) -> float:
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name) if headers else None
        if value:
            try:
                return max(0.0, float(value) * scale)
            except ValueError:
                pass
    return float(2 ** attempt)


def _error_detail(raw: bytes) -> str:
    try:
        error = json.loads(raw)["error"]
        if isinstance(error, str):
            return error[:500]
        return f"{error.get('type') or error.get('code') or 'error'}: {error['message']}"[:500]
    except (ValueError, KeyError, TypeError, AttributeError):
        return raw[:300].decode(errors="replace") or "(empty body)"


def _parse_json(text: str, what: str) -> object:
    try:
        return json.loads(text)
    except ValueError:
        raise ProviderError(f"malformed stream: {what} is not JSON") from None


class Anthropic(Provider):
    name = "anthropic"

    def create(self, system: str, messages: list, tools: list[dict]) -> tuple[list[dict], dict]:
        body = {"model": self.model, "max_tokens": self.max_tokens, "messages": messages, "stream": True}
        if tools:
            body["tools"] = tools
        if system:
            body["system"] = system
        headers = {"anthropic-version": "2023-06-01"}
        if self.key:
            headers["x-api-key"] = self.key
        kind, answer = self._post(self.base + "/v1/messages", body, headers)
        if isinstance(answer, bytes):  # a server that does not stream
            message = self._json(answer)
            if not isinstance(message.get("content"), list):
                raise ProviderError("the anthropic API answer has no content list")
            return message["content"], _anthropic_usage(message.get("usage"))
        return _checked(self._stream, answer)

    def _stream(self, lines: Iterator[bytes]) -> tuple[list[dict], dict]:
        blocks: dict[int, dict] = {}
        partial: dict[int, str] = {}
        usage: dict = {}
        for _, data in sse_events(lines):
            event = _parse_json(data, "an event")
            kind = event.get("type") if isinstance(event, dict) else None
            if kind == "message_start":
                usage.update((event.get("message") or {}).get("usage") or {})
            elif kind == "content_block_start":
                block = dict(event["content_block"])
                if block.get("type") == "tool_use":
                    partial[event["index"]] = ""
                blocks[event["index"]] = block
            elif kind == "content_block_delta":
                delta, block = event.get("delta") or {}, blocks.get(event.get("index"))
                if block is None:
                    raise ProviderError("malformed stream: a delta for a block that did not start")
                if delta.get("type") == "text_delta":
                    block["text"] = block.get("text", "") + delta.get("text", "")
                elif delta.get("type") == "input_json_delta":
                    partial[event["index"]] += delta.get("partial_json", "")
            elif kind == "content_block_stop" and event.get("index") in partial:
                text = partial.pop(event["index"])
                blocks[event["index"]]["input"] = _parse_json(text, "a tool input") if text else {}
            elif kind == "message_delta":
                usage.update({k: v for k, v in (event.get("usage") or {}).items() if v is not None})
            elif kind == "error":
                raise ProviderError(f"the anthropic API stream ended with an error: "
                                    f"{_error_detail(data.encode())}")
            elif kind == "message_stop":
                content = [blocks[i] for i in sorted(blocks) if blocks[i].get("type") in ("text", "tool_use")]
                return content, _anthropic_usage(usage)
        raise ProviderError("malformed stream: the anthropic API stream ended before message_stop")


def _checked(parse, lines: Iterator[bytes]) -> tuple[list[dict], dict]:
    """A stream whose events do not have the documented shape is a provider error, not a crash."""
    try:
        return parse(lines)
    except (KeyError, TypeError, AttributeError, IndexError) as exc:
        raise ProviderError(f"malformed stream: an event lacks an expected field ({exc!r})") from None


def _anthropic_usage(usage: object) -> dict:
    usage = usage if isinstance(usage, dict) else {}
    return {"inputTokens": usage.get("input_tokens") or 0, "outputTokens": usage.get("output_tokens") or 0,
            "cacheReadTokens": usage.get("cache_read_input_tokens") or 0,
            "cacheCreationTokens": usage.get("cache_creation_input_tokens") or 0}


class OpenAI(Provider):
    name = "openai"

    def create(self, system: str, messages: list, tools: list[dict]) -> tuple[list[dict], dict]:
        body = {"model": self.model, "max_tokens": self.max_tokens, "messages": to_openai(system, messages),
                "stream": True, "stream_options": {"include_usage": True}}
        if tools:
            body["tools"] = [{"type": "function", "function": {
                "name": t["name"], "description": t.get("description", ""), "parameters": t["input_schema"]}}
                for t in tools]
        headers = {"authorization": f"Bearer {self.key}"} if self.key else {}
        kind, answer = self._post(self.base + "/chat/completions", body, headers)
        if isinstance(answer, bytes):
            reply = self._json(answer)
            try:
                message = reply["choices"][0]["message"]
            except (KeyError, IndexError, TypeError):
                raise ProviderError("the openai API answer has no choices[0].message") from None
            calls = [(c.get("id"), (c.get("function") or {}).get("name"), (c.get("function") or {}).get("arguments"))
                     for c in message.get("tool_calls") or []]
            return _blocks(message.get("content") or "", calls), _openai_usage(reply.get("usage"))
        return _checked(self._stream, answer)

    def _stream(self, lines: Iterator[bytes]) -> tuple[list[dict], dict]:
        text, calls, usage, finished = [], {}, None, False
        for _, data in sse_events(lines):
            if data.strip() == "[DONE]":
                finished = True
                break
            chunk = _parse_json(data, "a chunk")
            if not isinstance(chunk, dict):
                raise ProviderError("malformed stream: a chunk is not an object")
            if chunk.get("error"):
                raise ProviderError(f"the openai API stream ended with an error: {_error_detail(data.encode())}")
            usage = chunk.get("usage") or usage
            for choice in chunk.get("choices") or []:
                delta = choice.get("delta") or {}
                if delta.get("content"):
                    text.append(delta["content"])
                for call in delta.get("tool_calls") or []:
                    entry = calls.setdefault(call.get("index", 0), ["", "", ""])
                    entry[0] = call.get("id") or entry[0]
                    function = call.get("function") or {}
                    entry[1] += function.get("name") or ""
                    entry[2] += function.get("arguments") or ""
                finished = finished or bool(choice.get("finish_reason"))
        if not finished:
            raise ProviderError("malformed stream: the openai API stream ended before it finished")
        return _blocks("".join(text), [calls[i] for i in sorted(calls)]), _openai_usage(usage)


def _blocks(text: str, calls: list) -> list[dict]:
    blocks = [{"type": "text", "text": text}] if text else []
    for index, (call_id, name, arguments) in enumerate(calls):
        try:
            args = json.loads(arguments) if arguments else {}
        except ValueError:
            args = {"invalidArguments": str(arguments)[:2000]}  # the tool answers with an error
        blocks.append({"type": "tool_use", "id": call_id or f"call_{index}", "name": name or "", "input": args})
    return blocks


def _openai_usage(usage: object) -> dict:
    usage = usage if isinstance(usage, dict) else {}
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    return {"inputTokens": max(0, (usage.get("prompt_tokens") or 0) - cached),
            "outputTokens": usage.get("completion_tokens") or 0, "cacheReadTokens": cached,
            "cacheCreationTokens": 0}


def to_openai(system: str, messages: list) -> list[dict]:
    """Anthropic-shaped history -> Chat Completions messages."""
    out: list[dict] = [{"role": "system", "content": system}] if system else []
    for message in messages:
        role, content = message.get("role"), message.get("content")
        if isinstance(content, str):
            out.append({"role": role, "content": content})
            continue
        if role == "assistant":
            text = "".join(b.get("text", "") for b in content if b.get("type") == "text")
            entry: dict = {"role": "assistant", "content": text or None}
            calls = [{"id": b["id"], "type": "function",
                      "function": {"name": b["name"], "arguments": json.dumps(b.get("input", {}))}}
                     for b in content if b.get("type") == "tool_use"]
            if calls:
                entry["tool_calls"] = calls
            out.append(entry)
            continue
        parts = []
        for block in content:
            if block.get("type") == "tool_result":
                body = block.get("content")
                if isinstance(body, list):
                    body = "".join(b.get("text", "") for b in body if isinstance(b, dict))
                out.append({"role": "tool", "tool_call_id": block.get("tool_use_id"),
                            "content": ("ERROR: " if block.get("is_error") else "") + str(body)})
            elif block.get("type") == "text":
                parts.append({"type": "text", "text": block.get("text", "")})
            elif block.get("type") == "image":
                source = block.get("source") or {}
                parts.append({"type": "image_url", "image_url": {
                    "url": f"data:{source.get('media_type')};base64,{source.get('data')}"}})
        if parts:
            only_text = all(p["type"] == "text" for p in parts)
            out.append({"role": "user", "content": "".join(p["text"] for p in parts) if only_text else parts})
    return out


PROVIDERS = {"anthropic": Anthropic, "openai": OpenAI}


def make_provider(config: Mapping, env: Mapping[str, str]) -> Provider:
    name = config.get("provider") or env.get("NANOCLAW_AGENT_PROVIDER") or "anthropic"
    if name not in PROVIDERS:
        raise ProviderError(f"agent.provider must be one of {', '.join(PROVIDERS)}, not {name!r}")
    return PROVIDERS[name](config, env)
