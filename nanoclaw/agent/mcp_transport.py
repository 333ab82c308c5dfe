"""The transports of the agent's MCP client (mcp_client.py): a stdio child process, one
JSON-RPC 2.0 message per line, and Streamable HTTP, one POST per message with the answer
as JSON or as a Server-Sent Events stream. Standard library only; everything a server
sends is hostile (sizes capped, shapes checked)."""
from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
import time
import urllib.error
import urllib.request

START_TIMEOUT = float(os.environ.get("NANOCLAW_MCP_START_TIMEOUT") or 30)  # initialize + tools/list
MAX_MESSAGE = 8 * 1024 * 1024  # one JSON-RPC message from a server


class McpError(Exception):
    """A server broke the protocol, failed or timed out."""


class _Stdio:
    def __init__(self, config: dict, cwd: str) -> None:
        command = config.get("command")
        args = config.get("args", [])
        env = config.get("env", {})
        if not isinstance(command, str) or not command:
            raise McpError("command must be a non-empty string")
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise McpError("args must be a list of strings")
        if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
            raise McpError("env must map strings to strings")
        try:
            self.process = subprocess.Popen(
                [command, *args], cwd=cwd, env={**os.environ, **env}, stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=None, start_new_session=True)
        except OSError as exc:
            raise McpError(f"could not start {command!r}: {exc.strerror or exc}") from None
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        stream = self.process.stdout
        while True:
            line = stream.readline(MAX_MESSAGE + 1)
            if not line:
                break
            if len(line) > MAX_MESSAGE:  # drop the rest of an oversized line
                while line and not line.endswith(b"\n"):
                    line = stream.readline(MAX_MESSAGE)
                continue
            self.lines.put(line)
        self.lines.put(None)

    def send(self, message: dict) -> None:
        try:
            self.process.stdin.write(json.dumps(message).encode() + b"\n")
            self.process.stdin.flush()
        except (OSError, ValueError):
            raise McpError(self._gone()) from None

    def exchange(self, message: dict, deadline: float) -> dict:
        self.send(message)
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise McpError("timed out") from None
            if line is None:
                raise McpError(self._gone())
            try:
                incoming = json.loads(line)
            except ValueError:
                continue  # stray output (a log line on stdout): skip it
            answer = self._handle(incoming, message["id"])
            if answer is not None:
                return answer

    def _handle(self, incoming: object, wanted: int) -> dict | None:
        if not isinstance(incoming, dict):
            return None
        if "method" in incoming:  # a request or notification from the server
            if "id" in incoming:
                reply = {"jsonrpc": "2.0", "id": incoming["id"]}
                if incoming["method"] == "ping":
                    reply["result"] = {}
                else:
                    reply["error"] = {"code": -32601, "message": "method not supported by this client"}
                self.send(reply)
            return None
        return incoming if incoming.get("id") == wanted else None

    def _gone(self) -> str:
        try:
            code = self.process.wait(timeout=1)
        except subprocess.TimeoutExpired:
            return "closed its stdout"
        return f"exited with code {code}"

    def close(self) -> None:
        try:
            self.process.stdin.close()
        except OSError:
            pass
        try:
            self.process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class _Http:
    def __init__(self, config: dict) -> None:
        url = config.get("url")
        headers = config.get("headers", {})
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise McpError("url must be an http(s) URL")
        if not isinstance(headers, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                    for k, v in headers.items()):
            raise McpError("headers must map strings to strings")
        self.url = url
        self.headers = dict(headers)
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def send(self, message: dict, deadline: float | None = None) -> None:
        with self._post(message, deadline or time.monotonic() + START_TIMEOUT):
            pass

    def exchange(self, message: dict, deadline: float) -> dict:
        with self._post(message, deadline) as response:
            session = response.headers.get("Mcp-Session-Id")
            if session and "Mcp-Session-Id" not in self.headers:
                self.headers["Mcp-Session-Id"] = session
            kind = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if kind == "text/event-stream":
                for data in _sse_data(response, deadline):
                    try:
                        incoming = json.loads(data)
                    except ValueError:
                        continue
                    if isinstance(incoming, dict) and "method" not in incoming and incoming.get("id") == message["id"]:
                        return incoming
                raise McpError("the event stream ended without an answer")
            body = response.read(MAX_MESSAGE + 1)
        if len(body) > MAX_MESSAGE:
            raise McpError("answer too large")
        try:
            incoming = json.loads(body)
        except ValueError:
            raise McpError("answer is not JSON") from None
        if not isinstance(incoming, dict):
            raise McpError("answer is not a JSON-RPC object")
        return incoming

    def _post(self, message: dict, deadline: float):
        request = urllib.request.Request(
            self.url, data=json.dumps(message).encode(), method="POST",
            headers={**self.headers, "Content-Type": "application/json",
                     "Accept": "application/json, text/event-stream"})
        timeout = max(0.1, deadline - time.monotonic())
        try:
            return self.opener.open(request, timeout=timeout)
        except urllib.error.HTTPError as exc:
            raise McpError(f"HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise McpError(f"could not reach {self.url}: {getattr(exc, 'reason', exc)}") from None

    def close(self) -> None:
        if "Mcp-Session-Id" in self.headers:
            request = urllib.request.Request(self.url, method="DELETE", headers=self.headers)
            try:
                self.opener.open(request, timeout=2).close()
            except (urllib.error.URLError, OSError):
                pass


def _sse_data(response, deadline: float):
    """The data of each event of a text/event-stream answer."""
    data: list[str] = []
    size = 0
    while time.monotonic() < deadline:
        line = response.readline(MAX_MESSAGE + 1)
        if not line:
            return
        size += len(line)
        if size > MAX_MESSAGE:
            raise McpError("event too large")
        text = line.decode("utf-8", errors="replace").rstrip("\r\n")
        if not text:
            if data:
                yield "\n".join(data)
            data, size = [], 0
        elif text.startswith("data:"):
            data.append(text[5:].removeprefix(" "))
    raise McpError("timed out")


def _kill(transport: _Stdio, graceful: bool = False) -> None:
    if graceful:
        transport.close()
        return
    transport.process.kill()
    transport.process.wait()
