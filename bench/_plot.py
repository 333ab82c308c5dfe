"""PNG plots for docs/bench/, embedded by the sections of docs/benchmarks.md.

matplotlib is the `bench` extra (pip install -e '.[bench]'); without it the
scenarios still run and their sections say that the plot was not drawn.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

PLOTS = Path(__file__).resolve().parent.parent / "docs" / "bench"


def draw(name: str, paint: Callable, *, size=(8, 4.5)) -> str:
    """Call paint(fig) on a new figure, save docs/bench/<name>.png; return the Markdown that embeds it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return f"_(plot {name}.png not drawn: matplotlib is missing; `pip install -e '.[bench]'`)_"
    PLOTS.mkdir(parents=True, exist_ok=True)
    fig = plt.figure(figsize=size, dpi=100)
    try:
        paint(fig)
        fig.tight_layout()
        fig.savefig(PLOTS / f"{name}.png")
    finally:
        plt.close(fig)
    return f"![{name}](bench/{name}.png)"


def cdf_points(values: list[float]) -> tuple[list[float], list[float]]:
    ordered = sorted(values)
    n = len(ordered)
    return ordered, [100 * (i + 1) / n for i in range(n)]
