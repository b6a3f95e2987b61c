"""A report saved next to its JSON: ``report.json``, a self-contained ``report.html``
and one PNG per figure, so the results outlive the API and its Redis."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from service.ab.page import render_html
from service.ab.plots import PANELS, render_all


def png_path(json_path: Path, panel: str) -> Path:
    """``out/report.json`` -> ``out/report-ctr-by-arm.png``."""
    return json_path.with_name(f"{json_path.stem}-{panel}.png")


def write_report(report: dict[str, Any], json_path: Path) -> Path:
    """Write the JSON, the figures and the page next to each other; returns the page's
    path. A figure with nothing to show this time is removed if an earlier run left one."""
    json_path = Path(json_path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    pngs = render_all(report)
    json_path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    for panel in PANELS:
        path = png_path(json_path, panel)
        if panel in pngs:
            path.write_bytes(pngs[panel])
        else:
            path.unlink(missing_ok=True)
    page = json_path.with_suffix(".html")
    page.write_text(render_html(report, pngs), encoding="utf-8")
    return page
