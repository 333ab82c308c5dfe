"""Issue 22: the host touches a folder a container can write (the group folders, sessions, IPC)
only through nanoclaw.safefs, which walks directory fds with O_NOFOLLOW at every step. This test
enforces it the way test_package_faces.py enforces the package rule: in every server module
(not nanoclaw/agent, which runs inside the container, nor safefs itself), no file-system call
may take a path derived from one of those trees. A path is derived when it is built from
`groups_dir`, `sessions_dir`, `ipc_dir`, `media_dir` (any object's), from a parameter or variable
of those names or of `group_dir`, or from another derived name in the same function; a name
`fd` or `*_fd` holds a no-follow directory fd, not a path.

Handing a derived path to safefs (or to code that only puts it in a container's mount list) is
the allowed way, and so is a call relative to the directory fd safefs answers; a path-string
call such as `Path.glob`, `os.scandir`, `shutil.rmtree` or `open` is not.
"""
from __future__ import annotations

import ast
from pathlib import Path

import nanoclaw

PACKAGE = Path(nanoclaw.__file__).parent
EXEMPT = {PACKAGE / "safefs.py"}
TREES = {"groups_dir", "sessions_dir", "ipc_dir", "media_dir", "group_dir"}
OS_CALLS = {"open", "scandir", "listdir", "walk", "fwalk", "unlink", "remove", "rmdir", "removedirs", "rename",
            "renames", "replace", "link", "symlink", "mkdir", "makedirs", "chmod", "chown", "lchown", "stat",
            "lstat", "truncate", "utime", "readlink", "access", "mkfifo"}
MODULE_CALLS = {"shutil", "glob"}
PATH_METHODS = {"glob", "rglob", "iterdir", "walk", "unlink", "mkdir", "rmdir", "rename", "replace", "open",
                "read_text", "read_bytes", "write_text", "write_bytes", "touch", "exists", "is_file", "is_dir",
                "is_symlink", "stat", "lstat", "chmod", "symlink_to", "hardlink_to", "resolve", "readlink",
                "samefile", "owner"}


def _names(node: ast.AST) -> set[str]:
    """Every name and attribute name used in an expression."""
    found = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name):
            found.add(sub.id)
        elif isinstance(sub, ast.Attribute):
            found.add(sub.attr)
        elif isinstance(sub, ast.arg):
            found.add(sub.arg)
    return found


def _is_fd(name: str) -> bool:
    """By convention a name `fd` or `*_fd` holds a directory fd (from safefs), not a path."""
    return name == "fd" or name.endswith("_fd")


def _targets(node: ast.AST) -> set[str]:
    return {sub.id for sub in ast.walk(node) if isinstance(sub, ast.Name)}


def _is_safefs_call(node: ast.AST) -> bool:
    """What safefs answers (a no-follow directory fd, bytes, names) is not a path."""
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
        and isinstance(node.func.value, ast.Name) and node.func.value.id == "safefs"


def _derived(function: ast.AST) -> set[str]:
    """The names of a function that hold a path derived from a container-writable tree."""
    derived = set(TREES)
    changed = True
    while changed:  # to a fixed point: a derived name may feed an earlier loop's assignment
        changed = False
        for node in ast.walk(function):
            if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.NamedExpr)) and node.value is not None:
                value, targets = node.value, (node.targets if isinstance(node, ast.Assign) else [node.target])
            elif isinstance(node, (ast.For, ast.AsyncFor, ast.comprehension)):
                value, targets = node.iter, [node.target]
            elif isinstance(node, ast.withitem) and node.optional_vars is not None:
                value, targets = node.context_expr, [node.optional_vars]
            else:
                continue
            if _names(value) & derived and not _is_safefs_call(value):
                new = {n for t in targets for n in _targets(t) if not _is_fd(n)} - derived
                if new:
                    derived |= new
                    changed = True
    return derived


def _offences(function: ast.AST, derived: set[str]) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(function):
        if not isinstance(node, ast.Call):
            continue
        func, args = node.func, [*node.args, *(k.value for k in node.keywords)]
        uses = any(_names(a) & derived for a in args)
        if isinstance(func, ast.Name) and func.id == "open" and uses:
            found.append((node.lineno, "open()"))
        elif isinstance(func, ast.Attribute):
            owner = func.value
            if isinstance(owner, ast.Name) and owner.id == "os" and func.attr in OS_CALLS and uses:
                found.append((node.lineno, f"os.{func.attr}"))
            elif isinstance(owner, ast.Name) and owner.id in MODULE_CALLS and uses:
                found.append((node.lineno, f"{owner.id}.{func.attr}"))
            elif func.attr in PATH_METHODS and not (isinstance(owner, ast.Name) and owner.id in ("os", "safefs")) \
                    and _names(owner) & derived:
                found.append((node.lineno, f".{func.attr}()"))
    return found


def offences_in(source: str) -> list[tuple[int, str]]:
    tree = ast.parse(source)
    found: set[tuple[int, str]] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            found.update(_offences(node, _derived(node)))
    return sorted(found)


def test_no_server_module_touches_a_container_writable_tree_but_through_safefs():
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path in EXEMPT or (PACKAGE / "agent") in path.parents:
            continue
        for line, call in offences_in(path.read_text(encoding="utf-8")):
            problems.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {call} on a path in a container-writable "
                            "tree; go through nanoclaw.safefs")
    assert problems == []


def test_the_checker_sees_the_forms_the_inbox_attack_used():
    """The check itself must catch what issue 22 found (a glob of the group folders, a mkdir of
    an inbox, an unlink of what a walk found), also through names derived in several steps."""
    bad = '''
def sweep(groups_dir):
    for path in groups_dir.glob("*/inbox/*/.download-*.part"):
        path.unlink()

def fetch(settings, group, now):
    folder = settings.groups_dir / group
    inbox = folder / "inbox" / day(now)
    inbox.mkdir(parents=True, exist_ok=True)
    fd = os.open(inbox / "x", os.O_WRONLY)

def purge(self, name):
    for path in (self.settings.sessions_dir / name,):
        shutil.rmtree(path)
    with open(self.settings.ipc_dir / "x") as fh:
        pass
'''
    found = {call for _, call in offences_in(bad)}
    assert found == {".glob()", ".unlink()", ".mkdir()", "os.open", "shutil.rmtree", "open()"}
    good = '''
def fetch(settings, group):
    fd = safefs.open_dir(settings.media_dir, (group,))
    os.open("x", os.O_RDONLY, dir_fd=fd)
'''
    assert offences_in(good) == []
