"""Shared by every benchmark: percentiles, the machine, and docs/benchmarks.md sections."""
from __future__ import annotations

import datetime as dt
import os
import platform
import re
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADER = "# Benchmarks\n\nWritten by `python -m bench <scenario>|all`; each section says when and where it ran.\n"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def machine() -> str:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{os.cpu_count()} cores ({cpu or 'unknown CPU'}), {platform.system()} {platform.release()}, "
            f"Python {sys.version.split()[0]}")


def load_sentence(load: tuple[tuple[float, float, float], tuple[float, float, float]], cores: str,
                  when: str = "at the start") -> str:
    """The load averages before and after a measurement (os.getloadavg() twice), and what shared the cores."""
    before, after = (" / ".join(f"{value:.2f}" for value in averages) for averages in load)
    return f"Load average (1/5/15 min) {when}: {before}; at the end: {after} ({cores})."


def write_section(title: str, body: str, command: str) -> None:
    """Replace (or add) the `## title` section of docs/benchmarks.md."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    section = f"## {title}\n\n{body.strip()}\n\n_Run {stamp} on {machine()}; command: `{command}`._\n"
    text = DOC.read_text() if DOC.exists() else HEADER
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text.rstrip("\n") + "\n")
