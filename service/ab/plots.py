"""The report's figures as PNG bytes: CTR per arm, CTR by position, cumulative CTR over
time. Each arm keeps one colour in every figure (and in the page's tables).

matplotlib's object API (``Figure``) is used, not pyplot: no global state, so reports
render side by side in the API's threads. A panel with nothing to show is left out
rather than drawn misleading (a single time point spread over years of axis).
"""

from __future__ import annotations

import io
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")
"""matplotlib's tab10 colours, in arm order (control first as configured)."""

DPI = 100


def arm_colours(names: list[str]) -> dict[str, str]:
    """One colour per arm, stable for a report (arm order of the configuration)."""
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}


def _figure() -> Figure:
    """A new figure; matplotlib is imported on first use (the API starts without it)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(5.5, 3.6))


def _png(fig: Figure) -> bytes:
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def ctr_by_arm(report: dict[str, Any]) -> bytes | None:
    """Bars of each arm's CTR with its user-level CI; None before any impression."""
    arms = report["arms"]
    names = [n for n in arms if arms[n]["ctr"] is not None]
    if not names:
        return None
    colours = arm_colours(list(arms))
    ctr = np.array([arms[n]["ctr"] for n in names])
    lo = np.array([arms[n]["ctr_ci"][0] if arms[n]["ctr_ci"][0] is not None else c
                   for n, c in zip(names, ctr, strict=True)])  # fmt: skip
    hi = np.array([arms[n]["ctr_ci"][1] if arms[n]["ctr_ci"][1] is not None else c
                   for n, c in zip(names, ctr, strict=True)])  # fmt: skip
    fig = _figure()
    ax = fig.subplots()
    ax.bar(names, ctr, yerr=[ctr - lo, hi - ctr], capsize=8,
           color=[colours[n] for n in names])  # fmt: skip
    for i, value in enumerate(ctr):
        ax.annotate(f"{value:.4f}", (i, value), textcoords="offset points", xytext=(14, 3))
    level = round(100 * report.get("level", 0.95))
    ax.set_title(f"Theme-CTR per arm ({level}% CI, user level)")
    ax.set_ylabel("CTR")
    ax.set_ylim(bottom=0)
    return _png(fig)


def ctr_by_position(report: dict[str, Any]) -> bytes | None:
    """CTR at each position (1 = top) per arm: how much the top slots carry; None
    without any positioned impression."""
    arms = report["arms"]
    colours = arm_colours(list(arms))
    fig = _figure()
    ax = fig.subplots()
    drawn = False
    for name, arm in arms.items():
        rows = [r for r in arm["by_position"] if r["ctr"] is not None]
        if not rows:
            continue
        ax.plot([r["position"] + 1 for r in rows], [r["ctr"] for r in rows], marker="o",
                color=colours[name], label=name)  # fmt: skip
        drawn = True
    if not drawn:
        return None
    ax.set_title("CTR by position")
    ax.set_xlabel("position (1 = top)")
    ax.set_ylabel("CTR")
    ax.set_ylim(bottom=0)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend()
    return _png(fig)


def time_unit(span_s: float) -> tuple[str, float]:
    """The unit of the time axis for a run lasting ``span_s`` seconds."""
    if span_s <= 3 * 3600:
        return "minutes", 60.0
    if span_s <= 3 * 86400:
        return "hours", 3600.0
    return "days", 86400.0


def ctr_over_time(report: dict[str, Any]) -> bytes | None:
    """Cumulative CTR per arm against the time since the first exposure, in a unit chosen
    from the run's span; None when the data covers fewer than two time points (a one-minute
    run has nothing to show over time)."""
    arms = report["arms"]
    series = {name: arm["over_time"] for name, arm in arms.items() if len(arm["over_time"]) >= 1}
    stamps = sorted({p["time"] for points in series.values() for p in points})
    if len(stamps) < 2:
        return None
    start = datetime.fromisoformat(stamps[0])
    span = (datetime.fromisoformat(stamps[-1]) - start).total_seconds()
    unit, seconds = time_unit(span)
    colours = arm_colours(list(arms))
    fig = _figure()
    ax = fig.subplots()
    for name, points in series.items():
        imps = np.cumsum([p["impressions"] for p in points])
        clicks = np.cumsum([p["clicks"] for p in points])
        elapsed = [
            (datetime.fromisoformat(p["time"]) - start).total_seconds() / seconds for p in points
        ]
        ax.plot(elapsed, clicks / np.maximum(imps, 1), marker="o", color=colours[name],
                label=name)  # fmt: skip
    ax.set_title("cumulative CTR over time")
    ax.set_xlabel(f"{unit} since {start:%Y-%m-%d %H:%M} UTC")
    ax.set_ylabel("CTR")
    ax.set_ylim(bottom=0)
    ax.legend()
    return _png(fig)


PANELS = {
    "ctr-by-arm": ctr_by_arm,
    "ctr-by-position": ctr_by_position,
    "ctr-over-time": ctr_over_time,
}
"""Every figure of a report, by the name its PNG file carries."""


def render_all(report: dict[str, Any]) -> dict[str, bytes]:
    """The report's figures that have something to show, by panel name."""
    figures = {name: draw(report) for name, draw in PANELS.items()}
    return {name: png for name, png in figures.items() if png is not None}
