"""The A/B report (service.ab.report, plots, page, files): what it computes from the event
log's counters, the figures it draws, and the self-contained page saved next to its JSON.
The report through the API and ``make abtest`` is in tests/test_ab_api.py."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from service.ab import ArmCounts, Experiment, build_report, render_html, write_report
from service.ab.plots import arm_colours, ctr_by_arm, ctr_over_time, render_all, time_unit
from service.ab.sequential import multiplier
from service.ab.stats import arm_stats, lift

T0 = 29_400_000  # a minute number (2025-11-24 16:00 UTC)


def experiment(**extra) -> Experiment:
    return Experiment.model_validate(
        {
            "name": "themes",
            "salt": "s",
            "control": "popular",
            "arms": [
                {"name": "popular", "weight": 50, "ranker": "popular"},
                {"name": "profile", "weight": 50, "ranker": "profile"},
            ],
            **extra,
        }
    )


def arm_counts(
    users: int, ctr: float, *, seed: int, minutes: int = 1, boost: dict[str, float] | None = None
) -> ArmCounts:
    """Counters as the event log keeps them: 10 impressions per user at positions 0-9,
    users alternating between the segments 'home' and 'search'."""
    rng = np.random.default_rng(seed)
    imps, clicks, positions, timeline, seg_imps, seg_clicks = {}, {}, {}, {}, {}, {}
    for i in range(users):
        user, segment = f"u{i}", ("home", "search")[i % 2]
        p = ctr * (boost or {}).get(segment, 1.0)
        shown = rng.random(10) < p * np.arange(1, 11) ** -0.5
        imps[user] = seg_imps[f"{segment}|{user}"] = 10
        clicks[user] = seg_clicks[f"{segment}|{user}"] = int(shown.sum())
        for position, clicked in enumerate(shown):
            positions[f"imp:{position}"] = positions.get(f"imp:{position}", 0) + 1
            if clicked:
                positions[f"click:{position}"] = positions.get(f"click:{position}", 0) + 1
        minute = T0 + i * minutes // users
        timeline[f"{minute}:imp"] = timeline.get(f"{minute}:imp", 0) + 10
        timeline[f"{minute}:click"] = timeline.get(f"{minute}:click", 0) + int(shown.sum())
    return ArmCounts(imps, clicks, positions, timeline, seg_imps, seg_clicks)


# --------------------------------------------------------------------------- the JSON
def test_report_statistics_match_the_stats_functions() -> None:
    control, treatment = arm_counts(600, 0.1, seed=1), arm_counts(600, 0.13, seed=2)
    report = build_report(experiment(), {"popular": control, "profile": treatment})
    c = arm_stats(np.array(list(control.impressions.values())),
                  np.array(list(control.clicks.values())))  # fmt: skip
    t = arm_stats(np.array(list(treatment.impressions.values())),
                  np.array(list(treatment.clicks.values())))  # fmt: skip
    fixed = lift(t, c)
    entry = report["lift"]["profile"]
    assert entry["relative"] == pytest.approx(fixed.relative)
    assert entry["p_value"] == pytest.approx(fixed.p_value)
    m = multiplier(1200)
    assert entry["sequential"]["ci"] == pytest.approx(
        [fixed.relative - m * fixed.se_relative, fixed.relative + m * fixed.se_relative]
    )
    assert entry["sequential"]["p_value"] > entry["p_value"]
    assert report["srm"]["observed"] == {"popular": 600, "profile": 600}
    assert report["srm"]["mismatch"] is False and report["srm"]["p_value"] == 1.0
    assert report["sequential"]["tuning_users"] == 5000
    assert [row["position"] for row in report["arms"]["profile"]["by_position"]] == list(range(10))


def test_a_lopsided_split_is_flagged_first_in_the_summary() -> None:
    report = build_report(
        experiment(),
        {"popular": arm_counts(600, 0.1, seed=1), "profile": arm_counts(450, 0.1, seed=2)},
    )
    assert report["srm"]["mismatch"] is True and report["srm"]["p_value"] < 0.001
    assert report["summary"][0].startswith("Sample ratio mismatch")
    page = render_html(report, pngs={})
    assert '<div class="srm bad" id="srm">' in page
    fine = build_report(
        experiment(),
        {"popular": arm_counts(600, 0.1, seed=1), "profile": arm_counts(590, 0.1, seed=2)},
    )
    assert '<div class="srm ok" id="srm">' in render_html(fine, pngs={})


def test_the_page_names_the_run_its_unknown_arms_and_the_earlier_runs() -> None:
    """The fields the API adds to a report (service.ab.runs) show on the page; a report
    built from counters alone has none of them and shows no run."""
    report = build_report(
        experiment(),
        {"popular": arm_counts(50, 0.1, seed=1), "profile": arm_counts(50, 0.1, seed=2)},
    )
    assert 'id="run"' not in render_html(report, pngs={})
    served = {"users": 2, "impressions": 20, "clicks": 3}
    report |= {
        "run": {"id": "0123456789ab", "salt": "s", "arms": []},
        "unknown_arms": {"ghost": served},
        "other_runs": {"ba9876543210": {"salt": "old", "arms_served": {"popular": served}}},
    }
    page = render_html(report, pngs={})
    assert '<p id="run">Run <code>0123456789ab</code>' in page
    assert 'id="unknown-arms"' in page and "<td>ghost</td><td>2</td><td>20</td><td>3</td>" in page
    assert "<td><code>ba9876543210</code></td><td>popular</td><td>2</td>" in page


def test_segments_find_the_planted_effect_and_only_it() -> None:
    """An A/A pair of arms, except that 'profile' doubles the CTR in 'search'."""
    counts = {
        "popular": arm_counts(1600, 0.08, seed=3),
        "profile": arm_counts(1600, 0.08, seed=4, boost={"search": 2.0}),
    }
    report = build_report(experiment(segments=["home", "search"]), counts)
    search, home = report["segments"]["search"], report["segments"]["home"]
    assert search["arms"]["profile"]["users"] == home["arms"]["profile"]["users"] == 800
    assert search["lift"]["profile"]["p_adjusted"] < 0.001
    assert search["lift"]["profile"]["relative"] == pytest.approx(1.0, abs=0.3)
    assert home["lift"]["profile"]["p_adjusted"] > 0.05
    assert home["lift"]["profile"]["p_adjusted"] == pytest.approx(
        min(1.0, 2 * home["lift"]["profile"]["p_value"])
    )
    assert any(line.startswith("segment search: profile beats popular")
               for line in report["summary"])  # fmt: skip
    assert not any(line.startswith("segment home") for line in report["summary"])


def test_an_empty_experiment_reports_without_failing() -> None:
    empty = ArmCounts({}, {}, {}, {})
    report = build_report(experiment(segments=["home"]), {"popular": empty, "profile": empty})
    assert report["summary"] == ["profile vs popular: not enough data yet"]
    assert report["srm"]["p_value"] is None and report["srm"]["mismatch"] is False
    assert report["segments"]["home"]["arms"]["popular"]["users"] == 0
    assert render_all(report) == {}
    page = render_html(report)
    assert "No impressions yet" in page and "Sample ratio check: nothing to test yet" in page


# --------------------------------------------------------------------------- the figures
def test_time_axis_unit_follows_the_span() -> None:
    assert time_unit(0) == ("minutes", 60)
    assert time_unit(3 * 3600) == ("minutes", 60)
    assert time_unit(5 * 3600) == ("hours", 3600)
    assert time_unit(10 * 86400) == ("days", 86400)


def test_over_time_panel_needs_two_time_points() -> None:
    one_minute = build_report(
        experiment(),
        {"popular": arm_counts(50, 0.1, seed=1), "profile": arm_counts(50, 0.1, seed=2)},
    )
    assert ctr_over_time(one_minute) is None
    assert set(render_all(one_minute)) == {"ctr-by-arm", "ctr-by-position"}
    assert "No CTR-over-time figure: the whole run fell within one minute" in render_html(
        one_minute
    )
    longer = build_report(
        experiment(),
        {"popular": arm_counts(50, 0.1, seed=1, minutes=20),
         "profile": arm_counts(50, 0.1, seed=2, minutes=20)},
    )  # fmt: skip
    assert ctr_over_time(longer) is not None


def _pixels_of(png: bytes, colour: str) -> int:
    image = imread(io.BytesIO(png))[..., :3]
    rgb = np.array([int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)])
    return int(np.sum(np.all(np.abs(image - rgb) < 0.02, axis=-1)))


def test_each_arm_has_its_own_colour_in_the_bars() -> None:
    report = build_report(
        experiment(),
        {"popular": arm_counts(80, 0.1, seed=1), "profile": arm_counts(80, 0.2, seed=2)},
    )
    colours = arm_colours(list(report["arms"]))
    assert len(set(colours.values())) == 2
    bars = ctr_by_arm(report)
    assert bars is not None
    for colour in colours.values():
        assert _pixels_of(bars, colour) > 500, colour


# --------------------------------------------------------------------------- the files
def test_write_report_saves_a_self_contained_page_next_to_the_json(tmp_path: Path) -> None:
    counts = {"popular": arm_counts(200, 0.1, seed=1, minutes=5),
              "profile": arm_counts(200, 0.15, seed=2, minutes=5)}  # fmt: skip
    report = build_report(experiment(segments=["home", "search"]), counts)
    (tmp_path / "report-ctr-over-time.png").write_bytes(b"stale")
    page = write_report(report, tmp_path / "report.json")
    assert page == tmp_path / "report.html"
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["report-ctr-by-arm.png", "report-ctr-by-position.png",
                     "report-ctr-over-time.png", "report.html", "report.json"]  # fmt: skip
    assert (tmp_path / "report-ctr-over-time.png").read_bytes().startswith(b"\x89PNG")
    text = page.read_text()
    assert text.count('src="data:image/png;base64,') == 3
    assert 'href="data:application/json;base64,' in text
    # nothing is fetched from elsewhere: every src/href is embedded
    assert not [u for u in re.findall(r'(?:src|href)="([^"]*)"', text) if not u.startswith("data:")]
    assert 'id="positions"' in text and 'id="segments"' in text
    # a later run with a one-minute timeline drops the stale over-time figure
    short = build_report(experiment(), {"popular": arm_counts(20, 0.1, seed=1),
                                        "profile": arm_counts(20, 0.1, seed=2)})  # fmt: skip
    write_report(short, tmp_path / "report.json")
    assert not (tmp_path / "report-ctr-over-time.png").exists()


def test_page_links_the_live_json_by_absolute_url() -> None:
    report = build_report(experiment(), {"popular": arm_counts(20, 0.1, seed=1),
                                         "profile": arm_counts(20, 0.1, seed=2)})  # fmt: skip
    page = render_html(report, pngs={}, json_url="http://127.0.0.1:8000/experiments/themes/report")
    assert '<a href="http://127.0.0.1:8000/experiments/themes/report">live JSON</a>' in page


def assert_renders_with_figures(page: Path, arms: list[str], shot: Path) -> None:
    """Headless Chromium draws ``page`` with its figures: each arm's colour covers
    thousands of pixels (the tables' colour swatches alone are a few hundred)."""
    subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--window-size=1250,1800", f"--screenshot={shot}", page.as_uri()],
        capture_output=True, timeout=60, check=True,
    )  # fmt: skip
    for colour in arm_colours(arms).values():
        assert _pixels_of(shot.read_bytes(), colour) > 3000, colour


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_the_saved_page_renders_its_figures_in_headless_chromium(tmp_path: Path) -> None:
    counts = {"popular": arm_counts(200, 0.1, seed=1, minutes=5),
              "profile": arm_counts(200, 0.15, seed=2, minutes=5)}  # fmt: skip
    page = write_report(build_report(experiment(), counts), tmp_path / "report.json")
    assert_renders_with_figures(page, ["popular", "profile"], tmp_path / "shot.png")
