"""The report as one self-contained HTML page: verdicts, the sample-ratio check (red when
it fails), per-arm and per-segment tables, CTR by position, and the figures embedded as
``data:`` URIs, so a saved copy opens anywhere, with no server and no network. A report
from the API also names its run, and lists arms outside the configuration and earlier
runs (:mod:`service.ab.runs`).

The report's JSON is embedded too (a download link), and a page served by the API also
links to the live JSON by its absolute URL.
"""

from __future__ import annotations

import base64
import html
from typing import Any

import orjson

from service.ab.plots import arm_colours, render_all

CAPTIONS = {
    "ctr-by-arm": "Theme-CTR per arm with its user-level confidence interval",
    "ctr-by-position": "CTR by position, per arm",
    "ctr-over-time": "cumulative CTR over time, per arm",
}

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
td,th{padding:4px 10px;text-align:right}th{background:#eee}
td:first-child,th:first-child{text-align:left;white-space:nowrap}
table{border-collapse:collapse;margin:.5em 0 1.5em}tr:nth-child(even){background:#f6f6f6}
.swatch{display:inline-block;width:.9em;height:.9em;border-radius:2px;margin-right:.4em;
vertical-align:middle}
.srm{padding:.6em 1em;border-radius:4px;margin:1em 0}
.srm.bad{background:#fde2e1;border:2px solid #c62828;color:#b71c1c;font-weight:bold}
.srm.ok{background:#e8f5e9;border:1px solid #a5d6a7}
figure{display:inline-block;margin:0 1em 1em 0}figcaption{font-size:.9em;color:#555}
.note{font-size:.9em;color:#555}.arm{white-space:nowrap}
"""


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _fmt(value: float | None, spec: str = ".4f") -> str:
    return "–" if value is None else format(value, spec)


def _interval(pair: list[float | None], spec: str) -> str:
    lo, hi = pair
    return "–" if lo is None or hi is None else f"{lo:{spec}} to {hi:{spec}}"


def _arm_label(name: str, colours: dict[str, str]) -> str:
    swatch = f'<span class="swatch" style="background:{colours.get(name, "#999")}"></span>'
    return f'<span class="arm">{swatch}{_esc(name)}</span>'


def _srm_block(srm: dict[str, Any]) -> str:
    observed = ", ".join(f"{_esc(a)} {n}" for a, n in srm["observed"].items())
    expected = ", ".join(f"{_esc(a)} {n:g}" for a, n in srm["expected"].items())
    stats = f"χ² = {_fmt(srm['chi2'], '.2f')}, p = {_fmt(srm['p_value'], '.3g')}"
    if srm["mismatch"]:
        return (
            f'<div class="srm bad" id="srm">Sample ratio mismatch: users per arm {observed}; '
            f"expected {expected} ({stats} &lt; {srm['threshold']}). Users were lost or added "
            "on one side: the lifts below are not to be trusted until that is explained.</div>"
        )
    if srm["p_value"] is None:
        return (
            f'<div class="srm" id="srm">Sample ratio check: nothing to test yet ({observed}).</div>'
        )
    return (
        f'<div class="srm ok" id="srm">Sample ratio check passed: users per arm {observed}; '
        f"expected {expected} ({stats}; flagged below p = {srm['threshold']}).</div>"
    )


def _served_cells(totals: dict[str, int]) -> str:
    return f"<td>{totals['users']}</td><td>{totals['impressions']}</td><td>{totals['clicks']}</td>"


def _runs_block(report: dict[str, Any]) -> str:
    """The run this report covers, arms that served in it unconfigured, earlier runs."""
    run = report.get("run")
    if not run:
        return ""  # built from counters alone (not through the API): no run to name
    parts = [
        f'<p id="run">Run <code>{_esc(run["id"])}</code> (the hash of the salt and the '
        "arms: another salt or other arms start a new run, from zero).</p>"
    ]
    unknown = report.get("unknown_arms") or {}
    if unknown:
        rows = "".join(
            f"<tr><td>{_esc(arm)}</td>{_served_cells(totals)}</tr>"
            for arm, totals in unknown.items()
        )
        parts.append(
            '<div class="srm bad" id="unknown-arms">Arms that served exposures in this run '
            "but are not in the configuration (not part of the statistics above):"
            "<table><tr><th>arm</th><th>users</th><th>impressions</th><th>clicks</th></tr>"
            f"{rows}</table></div>"
        )
    others = report.get("other_runs") or {}
    if others:
        rows = "".join(
            f"<tr><td><code>{_esc(run_id)}</code></td><td>{_esc(arm)}</td>{_served_cells(t)}</tr>"
            for run_id, entry in others.items()
            for arm, t in (entry.get("arms_served") or {}).items()
        )
        parts.append(
            '<h2>Other runs</h2><table id="other-runs"><tr><th>run</th><th>arm</th>'
            f"<th>users</th><th>impressions</th><th>clicks</th></tr>{rows}</table>"
        )
    return "\n".join(parts)


def _arms_table(report: dict[str, Any], colours: dict[str, str]) -> str:
    level = round(100 * report["level"])
    rows = []
    for name, a in report["arms"].items():
        result = report["lift"].get(name)
        fixed = seq = "control" if name == report["control"] else "–"
        if result and result["relative"] is not None:
            fixed = (
                f"{result['relative']:+.2%} ({_interval(result['ci'], '+.2%')}), "
                f"p = {_fmt(result['p_value'], '.2g')}"
            )
            s = result.get("sequential") or {}
            if s.get("ci"):
                seq = f"{_interval(s['ci'], '+.2%')}, p = {_fmt(s['p_value'], '.2g')}"
        rows.append(
            f"<tr><td>{_arm_label(name, colours)}</td><td>{_esc(a['ranker'])}</td>"
            f"<td>{a['weight']:g}</td><td>{a['users']}</td><td>{a['impressions']}</td>"
            f"<td>{a['clicks']}</td><td>{_fmt(a['ctr'])}</td>"
            f"<td>{_interval(a['ctr_ci'], '.4f')}</td><td>{fixed}</td><td>{seq}</td></tr>"
        )
    return (
        '<table id="arms"><tr><th>arm</th><th>ranker</th><th>weight</th><th>users</th>'
        f"<th>impressions</th><th>clicks</th><th>CTR</th><th>{level}% CI</th>"
        f"<th>lift vs control ({level}% CI, p)</th><th>always-valid {level}% CI, p</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _position_table(report: dict[str, Any], colours: dict[str, str]) -> str:
    arms = report["arms"]
    depth = max((len(a["by_position"]) for a in arms.values()), default=0)
    if depth == 0:
        return "<p>No impressions yet.</p>"
    head = "".join(f"<th>{_arm_label(n, colours)} CTR (clicks / impressions)</th>" for n in arms)
    rows = []
    for p in range(depth):
        cells = []
        for arm in arms.values():
            row = arm["by_position"][p] if p < len(arm["by_position"]) else None
            cells.append(
                "<td>–</td>"
                if row is None
                else f"<td>{_fmt(row['ctr'])} ({row['clicks']} / {row['impressions']})</td>"
            )
        rows.append(f"<tr><td>{p + 1}</td>{''.join(cells)}</tr>")
    return f'<table id="positions"><tr><th>position</th>{head}</tr>{"".join(rows)}</table>'


def _segments_table(report: dict[str, Any], colours: dict[str, str]) -> str:
    segments = report.get("segments") or {}
    if not segments:
        return (
            '<p class="note">No segments: requests name none (an experiment declares its '
            "<code>segments</code>, a ranking request names one with <code>segment</code>).</p>"
        )
    rows = []
    for segment, entry in segments.items():
        for name, a in entry["arms"].items():
            result = entry["lift"].get(name)
            cell = "control" if name == report["control"] else "–"
            if result and result["relative"] is not None:
                cell = (
                    f"{result['relative']:+.2%} ({_interval(result['ci'], '+.2%')}), "
                    f"p = {_fmt(result['p_value'], '.2g')}, adjusted "
                    f"{_fmt(result['p_adjusted'], '.2g')}"
                )
            rows.append(
                f"<tr><td>{_esc(segment)}</td><td>{_arm_label(name, colours)}</td>"
                f"<td>{a['users']}</td><td>{a['impressions']}</td><td>{a['clicks']}</td>"
                f"<td>{_fmt(a['ctr'])}</td><td>{_interval(a['ctr_ci'], '.4f')}</td>"
                f"<td>{cell}</td></tr>"
            )
    return (
        '<table id="segments"><tr><th>segment</th><th>arm</th><th>users</th>'
        "<th>impressions</th><th>clicks</th><th>CTR</th><th>CI</th>"
        "<th>lift vs control (CI, p, Bonferroni-adjusted p)</th></tr>" + "".join(rows) + "</table>"
    )


def _figures(report: dict[str, Any], pngs: dict[str, bytes]) -> str:
    figures = "".join(
        f'<figure><img alt="{_esc(CAPTIONS.get(name, name))}" '
        f'src="data:image/png;base64,{base64.b64encode(png).decode()}">'
        f"<figcaption>{_esc(CAPTIONS.get(name, name))}</figcaption></figure>"
        for name, png in pngs.items()
    )
    timed = any(arm["over_time"] for arm in report["arms"].values())
    if timed and "ctr-over-time" not in pngs:
        figures += (
            '<p class="note">No CTR-over-time figure: the whole run fell within one minute '
            "(the event log counts per minute).</p>"
        )
    return figures


def render_html(
    report: dict[str, Any], pngs: dict[str, bytes] | None = None, json_url: str | None = None
) -> str:
    """The page for ``report``; ``pngs`` as from :func:`service.ab.plots.render_all`
    (drawn here when not given); ``json_url``: an absolute link to the live JSON."""
    pngs = render_all(report) if pngs is None else pngs
    colours = arm_colours(list(report["arms"]))
    title = _esc(report["experiment"])
    embedded = base64.b64encode(orjson.dumps(report, option=orjson.OPT_INDENT_2)).decode()
    links = [
        f'<a download="{title}-report.json" href="data:application/json;base64,{embedded}">'
        "report JSON (embedded)</a>"
    ]
    if json_url:
        links.append(f'<a href="{_esc(json_url)}">live JSON</a>')
    verdicts = "".join(f"<li>{_esc(line)}</li>" for line in report["summary"])
    seq = report.get("sequential") or {}
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>A/B report: {title}</title>
<style>{STYLE}</style></head>
<body><h1>Experiment {title}</h1>
<p>control: {_esc(report["control"])}; generated {_esc(report["generated_at"])};
{" · ".join(links)}</p>
{_runs_block(report)}
{_srm_block(report["srm"])}
<ul id="summary">{verdicts}</ul>
<h2>Arms</h2>{_arms_table(report, colours)}
{_figures(report, pngs)}
<h2>CTR by position</h2>{_position_table(report, colours)}
<h2>Segments</h2>{_segments_table(report, colours)}
<p class="note">CTR = clicks / impressions. Intervals are computed over users (delta method),
since one user's clicks are correlated. The fixed-horizon interval and p-value are valid
when read once, at a sample size planned in advance; the always-valid ones
({_esc(seq.get("method", "a confidence sequence"))}, tightest near
{seq.get("tuning_users", "–")} users) stay valid however often the running test is looked
at. The sample-ratio check is a chi-square test of assigned users against the weights.</p>
</body></html>"""
