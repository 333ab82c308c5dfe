"""`python -m bench <scenario>|all|list`: run benchmark scenarios one after another."""
from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def scenarios() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules([str(HERE)]) if not m.name.startswith("_"))


def main(argv: list[str]) -> int:
    known = scenarios()
    if not argv or argv[0] in {"-h", "--help", "list"}:
        print("usage: python -m bench <scenario>|all\nscenarios: " + ", ".join(known))
        return 0 if argv else 2
    chosen = known if argv == ["all"] else argv
    unknown = [name for name in chosen if name not in known]
    if unknown:
        print(f"unknown scenario(s): {', '.join(unknown)}; known: {', '.join(known)}", file=sys.stderr)
        return 2
    failed = []
    for name in chosen:
        print(f"== {name}", flush=True)
        if subprocess.run([sys.executable, "-m", f"bench.{name}"], cwd=HERE.parent).returncode != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
