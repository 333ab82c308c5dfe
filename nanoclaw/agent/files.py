"""File tools confined to the workspace: read_file, write_file, edit_file, glob, grep.

Paths are relative to the group folder, or absolute under ``/workspace``. They may reach
the group folder, the global folder and the extra mounts (``/workspace/extra/...``), never
the IPC or session folders nor anything outside. A write to a read-only mount is refused
with a clear tool error.
"""
from __future__ import annotations

import errno
import fnmatch
import os
import re
from pathlib import Path

from tools import Toolbox, ToolError, int_arg, string_arg

CONTAINER_ROOT = "/workspace"
AREAS = ("group", "global", "extra", "media")
READ_LINES = 2000
LINE_CHARS = 2000
OUTPUT_CHARS = 30_000
GREP_MATCHES = 500
GREP_FILE_BYTES = 5 * 1024 * 1024
GLOB_RESULTS = 1000


class Workspace:
    """Where tool paths may go. ``root`` is /workspace in the container (a temp folder in tests)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.group = self.root / "group"

    def resolve(self, raw: object, *, write: bool = False) -> Path:
        if not isinstance(raw, str) or not raw.strip():
            raise ToolError("path must be a non-empty string")
        if raw == CONTAINER_ROOT or raw.startswith(CONTAINER_ROOT + "/"):
            candidate = self.root / raw[len(CONTAINER_ROOT):].lstrip("/")
        else:
            candidate = self.group / raw  # an absolute raw path replaces the base
        # resolve() follows every symlink, so a link pointing out is judged by its target.
        target = candidate.resolve()
        if not any(target == area or area in target.parents for area in self._areas()):
            raise ToolError(f"{raw!r} is outside the workspace folders the agent may use "
                            "(/workspace/group, /workspace/global, /workspace/extra, /workspace/media)")
        if write and _read_only(target):
            raise ToolError(f"{raw!r} is on a read-only mount; write in /workspace/group instead")
        return target

    def _areas(self) -> list[Path]:
        return [(self.root / name).resolve() for name in AREAS]

    def container_path(self, path: Path) -> str:
        return f"{CONTAINER_ROOT}/{path.relative_to(self.root)}"

    def show(self, path: Path) -> str:
        """How a path is shown to the model: relative inside the group folder, else absolute."""
        try:
            return str(path.relative_to(self.group.resolve())) or "."
        except ValueError:
            return self.container_path(path)


def _read_only(path: Path) -> bool:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return bool(os.statvfs(probe).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def cap(text: str, limit: int = OUTPUT_CHARS) -> str:
    """At most `limit` characters: head and tail kept, the cut marked."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n[... {len(text) - 2 * half} characters cut ...]\n{text[-half:]}"


def _writing(raw: str, action):
    try:
        return action()
    except OSError as exc:
        if exc.errno == errno.EROFS:
            raise ToolError(f"{raw!r} is on a read-only mount; write in /workspace/group instead") from None
        raise


def add_file_tools(box: Toolbox, ws: Workspace) -> None:
    def read_file(args: dict) -> str:
        path = ws.resolve(args.get("path"))
        if not path.is_file():
            raise ToolError(f"{args['path']!r} is not a file")
        offset = int_arg(args, "offset", 1, 1, 10**9)
        limit = int_arg(args, "limit", READ_LINES, 1, 100_000)
        with path.open("rb") as handle:
            if b"\0" in handle.read(8192):
                raise ToolError(f"{args['path']!r} looks like a binary file")
        lines, more, size = [], False, 0
        with path.open(encoding="utf-8", errors="replace") as handle:
            for number, line in enumerate(handle, 1):
                if number < offset:
                    continue
                if len(lines) >= limit or size > OUTPUT_CHARS * 3:
                    more = True
                    break
                line = line.rstrip("\n")
                if len(line) > LINE_CHARS:
                    line = line[:LINE_CHARS] + " [line cut]"
                lines.append(f"{number:6}\t{line}")
                size += len(lines[-1])
        if not lines:
            return f"(no lines from line {offset}; the file has fewer)" if offset > 1 else "(empty file)"
        tail = f"\n[more lines follow; read on with offset={offset + len(lines)}]" if more else ""
        return "\n".join(lines) + tail

    def write_file(args: dict) -> str:
        raw = args.get("path")
        path = ws.resolve(raw, write=True)
        content = args.get("content")
        if not isinstance(content, str):
            raise ToolError("content must be a string")
        if path.is_dir():
            raise ToolError(f"{raw!r} is a folder")

        def write() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content, encoding="utf-8")
        _writing(raw, write)
        return f"Wrote {len(content.encode())} bytes to {ws.show(path)}."

    def edit_file(args: dict) -> str:
        raw = args.get("path")
        path = ws.resolve(raw, write=True)
        old, new = args.get("oldText"), args.get("newText")
        if not isinstance(old, str) or not old:
            raise ToolError("oldText must be a non-empty string")
        if not isinstance(new, str):
            raise ToolError("newText must be a string")
        if not path.is_file():
            raise ToolError(f"{raw!r} is not a file")
        text = path.read_text(encoding="utf-8")
        count = text.count(old)
        if count == 0:
            raise ToolError(f"oldText was not found in {raw!r}; read the file and copy the text exactly")
        if count > 1 and not args.get("replaceAll"):
            raise ToolError(f"oldText occurs {count} times in {raw!r}; add context to make it unique "
                            "or set replaceAll")
        _writing(raw, lambda: path.write_text(text.replace(old, new), encoding="utf-8"))
        return f"Replaced {count} occurrence{'s' if count > 1 else ''} in {ws.show(path)}."

    def glob_files(args: dict) -> str:
        pattern = string_arg(args, "pattern")
        base, rest = _split_pattern(pattern)
        root = ws.resolve(base or ".")
        if not rest:
            return ws.show(root) if root.exists() else "(no matches)"
        if ".." in Path(rest).parts:
            raise ToolError("the pattern may not contain '..'")
        found = []
        for match in sorted(root.glob(rest)):
            if len(found) >= GLOB_RESULTS:
                found.append(f"[more than {GLOB_RESULTS} matches; narrow the pattern]")
                break
            try:
                ws.resolve(str(match))
            except ToolError:
                continue  # a symlink out of the workspace
            found.append(ws.show(match) + ("/" if match.is_dir() else ""))
        return "\n".join(found) or "(no matches)"

    def grep(args: dict) -> str:
        try:
            regex = re.compile(string_arg(args, "pattern"))
        except re.error as exc:
            raise ToolError(f"pattern is not a valid regular expression: {exc}") from None
        root = ws.resolve(args.get("path") or ".")
        name_glob = args.get("glob")
        if name_glob is not None and not isinstance(name_glob, str):
            raise ToolError("glob must be a string")
        files = [root] if root.is_file() else _walk(root)
        hits: list[str] = []
        size = 0
        for path in files:
            if name_glob and not (fnmatch.fnmatch(path.name, name_glob)
                                  or fnmatch.fnmatch(str(path.relative_to(root)) if path != root else path.name,
                                                     name_glob)):
                continue
            for line_no, line in _text_lines(path):
                if regex.search(line):
                    hits.append(f"{ws.show(path)}:{line_no}: {line[:LINE_CHARS]}")
                    size += len(hits[-1])
                    if len(hits) >= GREP_MATCHES or size > OUTPUT_CHARS:
                        return "\n".join(hits) + "\n[output capped; narrow the pattern, path or glob]"
        return "\n".join(hits) or "(no matches)"

    path_arg = {"type": "string", "description": "Relative to /workspace/group, or absolute under /workspace."}
    box.add("read_file", "Read a text file; lines come numbered. offset is the first line (1-based), "
            "limit the number of lines (default 2000).",
            {"path": path_arg, "offset": {"type": "integer"}, "limit": {"type": "integer"}}, ["path"], read_file)
    box.add("write_file", "Write a text file (parent folders are created; an existing file is replaced).",
            {"path": path_arg, "content": {"type": "string"}}, ["path", "content"], write_file)
    box.add("edit_file", "Replace oldText by newText in a file. oldText must occur exactly once unless "
            "replaceAll is true.",
            {"path": path_arg, "oldText": {"type": "string"}, "newText": {"type": "string"},
             "replaceAll": {"type": "boolean"}}, ["path", "oldText", "newText"], edit_file)
    box.add("glob", "List files matching a glob pattern such as '**/*.py' (relative to the group folder "
            "or absolute under /workspace).", {"pattern": {"type": "string"}}, ["pattern"], glob_files)
    box.add("grep", "Search files for a regular expression; answers path:line: text. path is a file or "
            "folder (default: the group folder), glob filters file names (e.g. '*.md').",
            {"pattern": {"type": "string"}, "path": path_arg, "glob": {"type": "string"}}, ["pattern"], grep)


def _split_pattern(pattern: str) -> tuple[str, str]:
    """('/workspace/global', '**/*.md') from '/workspace/global/**/*.md': the fixed prefix and the rest."""
    parts = pattern.split("/")
    for index, part in enumerate(parts):
        if any(c in part for c in "*?["):
            base = "/".join(parts[:index])
            return (base or ("/" if pattern.startswith("/") else "")), "/".join(parts[index:])
    return pattern, ""


def _walk(root: Path):
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in (".git", "node_modules", "__pycache__"))
        for name in sorted(names):
            yield Path(folder) / name


def _text_lines(path: Path):
    try:
        if path.is_symlink() or path.stat().st_size > GREP_FILE_BYTES:
            return
        with path.open("rb") as handle:
            data = handle.read()
    except OSError:
        return
    if b"\0" in data[:8192]:
        return
    yield from enumerate(data.decode("utf-8", errors="replace").splitlines(), 1)
