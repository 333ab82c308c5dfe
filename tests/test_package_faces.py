"""Issue 17 item 4: every package has a face (__init__.py with __all__) over private modules,
and code outside a package imports only its face."""
from __future__ import annotations

import ast
from pathlib import Path

import nanoclaw

ROOT = Path(nanoclaw.__file__).parent
# Container-side scripts: they run inside the agent image and import each other as top-level modules.
CONTAINER_SIDE = ROOT / "agent"


def _modules():
    for path in sorted(ROOT.rglob("*.py")):
        if CONTAINER_SIDE in path.parents:
            continue
        yield path


def _package_of(path: Path) -> tuple[str, ...]:
    """The dotted package a module belongs to, as parts: nanoclaw/ipc/_tree.py -> (nanoclaw, ipc)."""
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return parts[:-1] if parts[-1] != "__init__" else parts[:-1]


def _private_imports(path: Path, source: str | None = None) -> list[str]:
    """`from nanoclaw.X._y import ...` or `import nanoclaw.X._y` where X is not path's own package."""
    tree = ast.parse(path.read_text() if source is None else source, str(path))
    own = _package_of(path)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
            # `from nanoclaw.X import _y` reaches into a private module as well.
            names += [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            parts = tuple(name.split("."))
            if parts[0] != "nanoclaw":
                continue
            for i, part in enumerate(parts):
                if part.startswith("_") and not part.startswith("__"):
                    package = parts[:i]
                    if own[:len(package)] != package:
                        found.append(f"{path.relative_to(ROOT.parent)}:{node.lineno}: {name}")
                    break
            else:
                continue
            break  # one line per import statement
    return found


def test_nothing_imports_another_packages_private_modules():
    violations = [v for path in _modules() for v in _private_imports(path)]
    assert violations == []


def test_every_package_has_a_face_with_all():
    missing = []
    for init in sorted(ROOT.rglob("__init__.py")):
        if CONTAINER_SIDE in init.parents or init.parent == CONTAINER_SIDE:
            continue
        tree = ast.parse(init.read_text())
        targets = [t for node in tree.body if isinstance(node, ast.Assign) for t in node.targets]
        targets += [node.target for node in tree.body if isinstance(node, ast.AnnAssign)]
        has_all = any(getattr(t, "id", None) == "__all__" for t in targets)
        if not has_all:
            missing.append(str(init.relative_to(ROOT.parent)))
    assert missing == []


def test_the_walk_sees_a_private_import_from_outside():
    # The rule itself, on a module written for the purpose.
    source = ("from nanoclaw.supervisor._queue import Work\n"
              "from nanoclaw.api._common import services\n"
              "import nanoclaw.ipc._tree\n"
              "from nanoclaw.store import _db\n"
              "from nanoclaw.supervisor import RunEvent\n")
    assert _private_imports(ROOT / "api" / "probe.py", source) == [
        "nanoclaw/api/probe.py:1: nanoclaw.supervisor._queue",
        "nanoclaw/api/probe.py:3: nanoclaw.ipc._tree",
        "nanoclaw/api/probe.py:4: nanoclaw.store._db",
    ]


def test_no_module_is_over_400_lines():
    long = {str(path.relative_to(ROOT.parent)): n for path in sorted(ROOT.rglob("*.py"))
            if (n := len(path.read_text().splitlines())) > 400}
    assert long == {}
