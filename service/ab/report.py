"""The experiment report: per-arm CTR with user-level confidence intervals, lift against
control, CTR by position and over time; as JSON and as a small HTML page with a plot."""

from __future__ import annotations

import base64
import html
import io
import math
from datetime import UTC, datetime
from typing import Any

import numpy as np

from service.ab.eventlog import ArmCounts
from service.ab.experiments import Experiment
from service.ab.stats import arm_stats, lift


def _number(value: float) -> float | None:
    """JSON has no NaN: undefined statistics (too few users) are null."""
    return None if value is None or not math.isfinite(value) else float(value)


def _pair(values: tuple[float, float]) -> list[float | None]:
    return [_number(values[0]), _number(values[1])]


def build_report(experiment: Experiment, counts: dict[str, ArmCounts]) -> dict[str, Any]:
    stats = {}
    arms: dict[str, Any] = {}
    for arm in experiment.arms:
        c = counts[arm.name]
        users = sorted(c.impressions)
        impressions = np.array([c.impressions[u] for u in users], dtype=np.int64)
        clicks = np.array([c.clicks.get(u, 0) for u in users], dtype=np.int64)
        s = arm_stats(impressions, clicks)
        stats[arm.name] = s
        arms[arm.name] = {
            "ranker": arm.ranker,
            "weight": arm.weight,
            "users": s.users,
            "impressions": s.impressions,
            "clicks": s.clicks,
            "ctr": _number(s.ctr),
            "ctr_ci": _pair(s.ctr_ci),
            "by_position": _by_position(c.positions),
            "over_time": _over_time(c.timeline),
        }
    control = stats[experiment.control]
    lifts = {}
    for name, s in stats.items():
        if name == experiment.control:
            continue
        result = lift(s, control)
        lifts[name] = {
            "relative": _number(result.relative),
            "ci": _pair(result.ci),
            "p_value": _number(result.p_value),
            "absolute": _number(result.absolute),
        }
    return {
        "experiment": experiment.name,
        "control": experiment.control,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "arms": arms,
        "lift": lifts,
        "summary": summary(experiment.control, arms, lifts),
    }


def _by_position(positions: dict[str, int]) -> list[dict[str, Any]]:
    n = 1 + max((int(key.split(":")[1]) for key in positions), default=-1)
    rows = []
    for p in range(n):
        imps, clicks = positions.get(f"imp:{p}", 0), positions.get(f"click:{p}", 0)
        rows.append(
            {
                "position": p,
                "impressions": imps,
                "clicks": clicks,
                "ctr": clicks / imps if imps else None,
            }
        )
    return rows


def _over_time(timeline: dict[str, int]) -> list[dict[str, Any]]:
    minutes = sorted({int(key.split(":")[0]) for key in timeline})
    return [
        {
            "time": datetime.fromtimestamp(m * 60, UTC).isoformat(timespec="minutes"),
            "impressions": timeline.get(f"{m}:imp", 0),
            "clicks": timeline.get(f"{m}:click", 0),
        }
        for m in minutes
    ]


def summary(control: str, arms: dict[str, Any], lifts: dict[str, Any]) -> list[str]:
    """One sentence per treatment arm: the verdict a reader looks for first."""
    lines = []
    for name, result in lifts.items():
        rel, p, ci = result["relative"], result["p_value"], result["ci"]
        if rel is None or p is None or ci[0] is None:
            lines.append(f"{name} vs {control}: not enough data yet")
            continue
        verdict = (
            ("beats" if rel > 0 else "loses to") if p < 0.05 else "is not distinguishable from"
        )
        lines.append(
            f"{name} {verdict} {control}: Theme-CTR {arms[name]['ctr']:.4f} vs "
            f"{arms[control]['ctr']:.4f}, lift {rel:+.2%} (95% CI {ci[0]:+.2%} to {ci[1]:+.2%}), "
            f"p = {p:.2g}"
        )
    return lines


def render_html(report: dict[str, Any]) -> str:
    """The report as a page: verdict, table, and a plot of CTR per arm (95% CI) and the
    cumulative CTR over time."""
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{a['ranker']}</td><td>{a['users']}</td>"
        f"<td>{a['impressions']}</td><td>{a['clicks']}</td><td>{_fmt(a['ctr'])}</td>"
        f"<td>{_fmt(a['ctr_ci'][0])} – {_fmt(a['ctr_ci'][1])}</td>"
        f"<td>{_lift_cell(report['lift'].get(name))}</td></tr>"
        for name, a in report["arms"].items()
    )
    verdicts = "".join(f"<li>{html.escape(line)}</li>" for line in report["summary"])
    title = html.escape(report["experiment"])
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>A/B report: {title}</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:4px 10px;text-align:right}}
table{{border-collapse:collapse}}tr:nth-child(even){{background:#f3f3f3}}</style></head>
<body><h1>Experiment {title}</h1><p>control: {html.escape(report["control"])},
generated {report["generated_at"]} (<a href="{title}/report">JSON</a>)</p>
<ul>{verdicts}</ul>
<table><tr><th>arm</th><th>ranker</th><th>users</th><th>impressions</th><th>clicks</th>
<th>CTR</th><th>95% CI</th><th>lift vs control (95% CI, p)</th></tr>{rows}</table>
<img alt="CTR per arm and over time" src="data:image/png;base64,{_plot(report)}">
</body></html>"""


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def _lift_cell(result: dict[str, Any] | None) -> str:
    if not result or result["relative"] is None:
        return "–"
    lo, hi = result["ci"]
    ci = "" if lo is None else f" ({lo:+.2%} to {hi:+.2%})"
    p = "" if result["p_value"] is None else f", p = {result['p_value']:.2g}"
    return f"{result['relative']:+.2%}{ci}{p}"


def _plot(report: dict[str, Any]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = report["arms"]
    names = list(arms)
    fig, (bars, lines) = plt.subplots(1, 2, figsize=(11, 4))
    ctr = [arms[n]["ctr"] or 0.0 for n in names]
    bounds = [
        [b if b is not None else c for b in arms[n]["ctr_ci"]]
        for n, c in zip(names, ctr, strict=True)
    ]
    low = [c - lo for c, (lo, _) in zip(ctr, bounds, strict=True)]
    high = [hi - c for c, (_, hi) in zip(ctr, bounds, strict=True)]
    bars.bar(names, ctr, yerr=[low, high], capsize=8, color="#4c72b0")
    bars.set_title("Theme-CTR per arm (95% CI, user level)")
    bars.set_ylabel("CTR")
    for name in names:
        points = arms[name]["over_time"]
        if not points:
            continue
        imps = np.cumsum([p["impressions"] for p in points])
        clicks = np.cumsum([p["clicks"] for p in points])
        times = [datetime.fromisoformat(p["time"]) for p in points]
        lines.plot(times, clicks / np.maximum(imps, 1), marker="o", label=name)
    lines.set_title("cumulative CTR over time")
    lines.legend()
    fig.autofmt_xdate()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()
