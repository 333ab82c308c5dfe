"""The bash and web_fetch tools."""
from __future__ import annotations

import html.parser
import os
import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from files import OUTPUT_CHARS, cap
from tools import Toolbox, ToolError, int_arg, string_arg

BASH_TIMEOUT = 120
BASH_MAX_TIMEOUT = 600
PIPE_GRACE = 1.0  # seconds to wait for output after the command ended
FETCH_BYTES = 10 * 1024 * 1024
FETCH_SECONDS = 30
FETCH_CHARS = 50_000
FETCH_MAX_CHARS = 200_000


class _Capped:
    """Reads a pipe to its end in a thread, keeping at most OUTPUT_CHARS bytes: head and tail."""

    def __init__(self, pipe) -> None:
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0
        self.thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self.thread.start()

    def _read(self, pipe) -> None:
        half = OUTPUT_CHARS // 2
        while chunk := pipe.read1(65536) if hasattr(pipe, "read1") else pipe.read(65536):
            self.total += len(chunk)
            room = half - len(self.head)
            if room > 0:
                self.head += chunk[:room]
                chunk = chunk[room:]
            self.tail += chunk
            if len(self.tail) > half:
                del self.tail[:len(self.tail) - half]

    def text(self) -> str:
        cut = self.total - len(self.head) - len(self.tail)
        head = self.head.decode("utf-8", errors="replace")
        if cut <= 0:
            return head + self.tail.decode("utf-8", errors="replace")
        return f"{head}\n[... {cut} bytes cut ...]\n{self.tail.decode('utf-8', errors='replace')}"


def run_bash(command: str, cwd: Path, timeout: float) -> tuple[int | None, str, str]:
    """(exit code or None on timeout, stdout, stderr). On timeout the whole process group is killed."""
    process = subprocess.Popen(["bash", "-lc", command], cwd=cwd, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    out, err = _Capped(process.stdout), _Capped(process.stderr)
    try:
        code: int | None = process.wait(timeout)
    except subprocess.TimeoutExpired:
        code = None
        try:  # the whole group: every child the command started
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        process.wait()
    # A background child (`cmd &`) may still hold the pipes: read what is there, do not wait for it.
    for reader in (out, err):
        reader.thread.join(timeout=PIPE_GRACE)
    if not (out.thread.is_alive() or err.thread.is_alive()):
        process.stdout.close()
        process.stderr.close()
    return code, out.text(), err.text()


class _Text(html.parser.HTMLParser):
    """HTML -> readable text: no scripts or styles, blocks on their own lines."""

    SKIP = {"script", "style", "noscript", "template", "svg", "head"}
    BLOCKS = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section", "article",
              "header", "footer", "nav", "pre", "blockquote", "table", "ul", "ol", "hr", "title", "main"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        if tag == "title":
            self._in_title = True
        elif tag in self.SKIP:
            self.skipping += 1
        if tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag == "title":
            self._in_title = False
        elif tag in self.SKIP and self.skipping:
            self.skipping -= 1
        if tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data):
        if self._in_title:
            self.title += data
        elif not self.skipping:
            self.parts.append(data)

    def text(self) -> str:
        lines = (re.sub(r"[ \t\r\f\v]+", " ", line).strip() for line in "".join(self.parts).split("\n"))
        body = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
        return (f"# {self.title.strip()}\n\n" if self.title.strip() else "") + body


def html_to_text(markup: str) -> str:
    parser = _Text()
    parser.feed(markup)
    parser.close()
    return parser.text()


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if not newurl.lower().startswith(("http://", "https://")):
            raise ToolError(f"refused a redirect to {newurl[:200]!r}: only http and https are fetched")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def fetch(url: str, max_chars: int) -> str:
    if not re.match(r"(?i)https?://[^/\s]", url):
        raise ToolError("url must be an absolute http:// or https:// URL")
    opener = urllib.request.build_opener(_HttpOnlyRedirects())
    request = urllib.request.Request(url, headers={"User-Agent": "NanoClaw-agent/1 (web_fetch)",
                                                   "Accept": "text/html,text/plain,application/json,*/*;q=0.5"})
    deadline = time.monotonic() + FETCH_SECONDS
    try:
        with opener.open(request, timeout=FETCH_SECONDS) as response:
            status, final, headers = response.status, response.geturl(), response.headers
            data = _read_capped(response, deadline)
    except urllib.error.HTTPError as exc:
        body = _read_capped(exc, deadline)
        raise ToolError(f"HTTP {exc.code} from {url}: {cap(_decode(body, exc.headers), 2000)}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise ToolError(f"could not fetch {url}: {getattr(exc, 'reason', exc)}") from None
    kind = headers.get_content_type()
    text = _decode(data, headers)
    if kind in ("text/html", "application/xhtml+xml") or (kind == "text/plain" and text.lstrip()[:15].lower()
                                                          .startswith(("<!doctype html", "<html"))):
        text = html_to_text(text)
    elif not (kind.startswith("text/") or kind.endswith(("json", "xml", "javascript"))):
        return f"URL: {final}\nStatus: {status}\nContent-Type: {kind}\n\n[{len(data)} bytes of {kind}; not text]"
    note = "\n[the download was cut at 10 MiB]" if len(data) > FETCH_BYTES else ""
    if len(text) > max_chars:
        note += f"\n[... {len(text) - max_chars} more characters; raise maxChars to see more]"
        text = text[:max_chars]
    return f"URL: {final}\nStatus: {status}\nContent-Type: {kind}\n\n{text}{note}"


def _read_capped(response, deadline: float) -> bytes:
    data = bytearray()
    read = getattr(response, "read1", response.read)  # read1: whatever arrived, so the deadline holds
    while len(data) <= FETCH_BYTES:
        if time.monotonic() > deadline:
            raise ToolError(f"the download took longer than {FETCH_SECONDS} s")
        chunk = read(65536)
        if not chunk:
            break
        data += chunk
    return bytes(data[:FETCH_BYTES + 1])


def _decode(data: bytes, headers) -> str:
    charset = headers.get_content_charset() or "utf-8"
    try:
        return data[:FETCH_BYTES].decode(charset, errors="replace")
    except LookupError:
        return data[:FETCH_BYTES].decode("utf-8", errors="replace")


def add_shell_tools(box: Toolbox, cwd: Path) -> None:
    def bash(args: dict) -> str:
        command = string_arg(args, "command")
        timeout = int_arg(args, "timeoutSecs", BASH_TIMEOUT, 1, BASH_MAX_TIMEOUT)
        code, out, err = run_bash(command, cwd, timeout)
        text = f"[stdout]\n{out}" + (f"\n[stderr]\n{err}" if err else "")
        if code is None:
            raise ToolError(f"timed out after {timeout} s; the command and every process it started were "
                            f"killed\n{text}")
        return f"exit code: {code}\n{text}"

    def web_fetch(args: dict) -> str:
        url = string_arg(args, "url").strip()
        return fetch(url, int_arg(args, "maxChars", FETCH_CHARS, 100, FETCH_MAX_CHARS))

    box.add("bash", "Run a bash command (bash -lc) in /workspace/group. Answers the exit code, stdout and "
            f"stderr (each cut to {OUTPUT_CHARS} characters, head and tail kept). timeoutSecs: default "
            f"{BASH_TIMEOUT}, at most {BASH_MAX_TIMEOUT}; on timeout every process it started is killed. "
            "Redirect the output of background processes (`cmd > log 2>&1 &`).",
            {"command": {"type": "string"}, "timeoutSecs": {"type": "integer"}}, ["command"], bash)
    box.add("web_fetch", "GET an http(s) URL; HTML comes back as readable text. maxChars caps the answer "
            f"(default {FETCH_CHARS}).", {"url": {"type": "string"}, "maxChars": {"type": "integer"}},
            ["url"], web_fetch)
