"""The dashboard's one chart: a model's gate figure run after run, shipped or refused.

Drawn on the server with matplotlib (the `local` extra, which `local up` has) as
inline SVG: no charting script in the page, so its Content-Security-Policy still
allows one script only. Without matplotlib the runs table alone says the same.
A figure is drawn once per distinct set of runs: the page refreshes every few
seconds and the runs change only when one ends.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Sequence
from typing import Any

# (when, figure, shipped) for each run with a gate figure, oldest first.
Point = tuple[str, float, bool]
SHIPPED, REFUSED, LINE = "#17803d", "#c01c28", "#999999"


def gate_points(runs: Sequence[dict[str, Any]]) -> tuple[Point, ...]:
    """The runs (newest first, as the registry lists them) that a gate judged."""
    points = []
    for run in reversed(runs):
        figure = run.get("judged")
        if isinstance(figure, int | float) and not isinstance(figure, bool):
            points.append(
                (str(run.get("at", "")), float(figure), run.get("decision") == "promoted")
            )
    return tuple(points)


def gate_chart(runs: Sequence[dict[str, Any]], metric: str) -> str:
    """Inline SVG of the gate figure over the runs, or "" with fewer than two."""
    points = gate_points(runs)
    if len(points) < 2:
        return ""
    return _svg(points, metric)


@functools.lru_cache(maxsize=64)
def _svg(points: tuple[Point, ...], metric: str) -> str:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return ""
    # Figure, not pyplot: no global state, so the server's threads may draw at once.
    figure = Figure(figsize=(6.4, 1.9), dpi=72)
    ax = figure.subplots()
    xs = list(range(len(points)))
    ax.plot(xs, [p[1] for p in points], color=LINE, linewidth=1)
    for shipped, color, label in ((True, SHIPPED, "shipped"), (False, REFUSED, "refused")):
        at = [x for x, p in zip(xs, points, strict=True) if p[2] is shipped]
        if at:
            values = [points[x][1] for x in at]
            ax.scatter(at, values, color=color, s=18, zorder=3, label=label)
    step = max(1, len(points) // 6)
    one_day = len({p[0][:10] for p in points}) == 1
    labels = [_short(p[0], one_day) for p in points[::step]]
    ax.set_xticks(xs[::step], labels, fontsize=7)
    ax.tick_params(axis="y", labelsize=7)
    ax.set_ylabel(metric, fontsize=8)
    ax.legend(fontsize=7, loc="best", framealpha=0.8)
    ax.grid(axis="y", color="#eeeeee")
    figure.tight_layout(pad=0.4)
    out = io.StringIO()
    figure.savefig(out, format="svg", metadata={"Date": None})
    svg = out.getvalue()
    return svg[svg.index("<svg") :]


def _short(at: str, one_day: bool) -> str:
    """2026-12-06T23:41:05Z -> 23:41:05 when every run is of one day, else 12-06 23:41."""
    if len(at) < 19:
        return at
    return at[11:19] if one_day else at[5:16].replace("T", " ")
