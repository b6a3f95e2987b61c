"""The experiment report as JSON: per arm the CTR with its user-level 95% CI; the lift of
each treatment over control with fixed-horizon and always-valid (sequential) intervals;
the sample-ratio-mismatch check; CTR by position and over time; the same per segment.

It is built from the event log's counters alone and holds everything a page needs, so a
saved ``report.json`` renders again without the API (:mod:`service.ab.page`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import numpy as np

from service.ab.eventlog import ArmCounts
from service.ab.experiments import Experiment
from service.ab.sequential import DEFAULT_TUNING, sequential_lift
from service.ab.srm import sample_ratio_check
from service.ab.stats import ArmStats, arm_stats, lift

LEVEL = 0.95
"""Confidence level of every interval and the significance threshold ``1 - LEVEL``."""


def _number(value: float | None) -> float | None:
    """JSON has no NaN: undefined statistics (too few users) are null."""
    return None if value is None or not math.isfinite(value) else float(value)


def _pair(values: tuple[float, float]) -> list[float | None]:
    return [_number(values[0]), _number(values[1])]


def _user_stats(impressions: dict[str, int], clicks: dict[str, int]) -> ArmStats:
    users = sorted(impressions)
    imps = np.array([impressions[u] for u in users], dtype=np.int64)
    clks = np.array([clicks.get(u, 0) for u in users], dtype=np.int64)
    return arm_stats(imps, clks, LEVEL)


def _totals(s: ArmStats) -> dict[str, Any]:
    return {
        "users": s.users,
        "impressions": s.impressions,
        "clicks": s.clicks,
        "ctr": _number(s.ctr),
        "ctr_ci": _pair(s.ctr_ci),
    }


def _lift(treatment: ArmStats, control: ArmStats, *, tuning: int | None) -> dict[str, Any]:
    """Fixed-horizon lift; with ``tuning``, its always-valid counterpart too."""
    fixed = lift(treatment, control, LEVEL)
    entry: dict[str, Any] = {
        "relative": _number(fixed.relative),
        "ci": _pair(fixed.ci),
        "p_value": _number(fixed.p_value),
        "absolute": _number(fixed.absolute),
    }
    if tuning is not None:
        seq = sequential_lift(fixed, treatment.users + control.users, LEVEL, tuning)
        entry["sequential"] = {
            "ci": _pair(seq.ci),
            "absolute_ci": _pair(seq.absolute_ci),
            "p_value": _number(seq.p_value),
        }
    return entry


def build_report(
    experiment: Experiment, counts: dict[str, ArmCounts], *, tuning: int = DEFAULT_TUNING
) -> dict[str, Any]:
    """The report of ``experiment`` from its counters (``ABStore.counts``)."""
    stats: dict[str, ArmStats] = {}
    arms: dict[str, Any] = {}
    for arm in experiment.arms:
        c = counts[arm.name]
        stats[arm.name] = s = _user_stats(c.impressions, c.clicks)
        arms[arm.name] = {
            "ranker": arm.ranker,
            "weight": arm.weight,
            **_totals(s),
            "by_position": _by_position(c.positions),
            "over_time": _over_time(c.timeline),
        }
    control = stats[experiment.control]
    lifts = {
        name: _lift(s, control, tuning=tuning)
        for name, s in stats.items()
        if name != experiment.control
    }
    report = {
        "experiment": experiment.name,
        "control": experiment.control,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "level": LEVEL,
        "arms": arms,
        "lift": lifts,
        "sequential": {
            "method": "asymptotic confidence sequence (Waudby-Smith et al. 2023)",
            "tuning_users": tuning,
        },
        "srm": _srm(experiment, counts),
        "segments": _segments(experiment, counts),
    }
    report["summary"] = summary(report)
    return report


def _srm(experiment: Experiment, counts: dict[str, ArmCounts]) -> dict[str, Any]:
    """The sample-ratio check on assigned users (every user with a logged ranking)."""
    users = {arm.name: len(counts[arm.name].impressions) for arm in experiment.arms}
    check = sample_ratio_check(users, {arm.name: arm.weight for arm in experiment.arms})
    return {
        "observed": check.observed,
        "expected": {arm: round(value, 1) for arm, value in check.expected.items()},
        "chi2": _number(check.chi2),
        "p_value": _number(check.p_value),
        "threshold": check.threshold,
        "mismatch": check.mismatch,
    }


def _segments(experiment: Experiment, counts: dict[str, ArmCounts]) -> dict[str, Any]:
    """Per segment (declared or seen), every arm's totals and each treatment's lift.

    The unit is a (segment, user) pair. ``p_adjusted`` is Bonferroni over the segments:
    with many segments one of them "wins" by chance, so verdicts use the adjusted value.
    """
    split: dict[str, dict[str, tuple[dict[str, int], dict[str, int]]]] = defaultdict(dict)
    seen = list(experiment.segments)
    for arm in experiment.arms:
        c = counts[arm.name]
        for table, target in ((c.segment_impressions, 0), (c.segment_clicks, 1)):
            for key, value in table.items():
                segment, _, user = key.partition("|")
                if segment not in seen:
                    seen.append(segment)
                pair = split[segment].setdefault(arm.name, ({}, {}))
                pair[target][user] = value
    tested = max(len(seen), 1)
    out: dict[str, Any] = {}
    for segment in seen:
        stats = {
            arm.name: _user_stats(*split[segment].get(arm.name, ({}, {})))
            for arm in experiment.arms
        }
        lifts = {}
        for name, s in stats.items():
            if name == experiment.control:
                continue
            entry = _lift(s, stats[experiment.control], tuning=None)
            p = entry["p_value"]
            entry["p_adjusted"] = None if p is None else min(1.0, p * tested)
            lifts[name] = entry
        out[segment] = {"arms": {n: _totals(s) for n, s in stats.items()}, "lift": lifts}
    return out


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


def _verdict(rel: float, p: float, alpha: float) -> str:
    if p < alpha:
        return "beats" if rel > 0 else "loses to"
    return "is not distinguishable from"


def summary(report: dict[str, Any]) -> list[str]:
    """The verdicts a reader looks for first: the SRM alarm, then per treatment arm the
    fixed-horizon and the always-valid reading, then the segments that differ."""
    control, arms, alpha = report["control"], report["arms"], 1 - report["level"]
    lines = []
    srm = report["srm"]
    if srm["mismatch"]:
        lines.append(
            f"Sample ratio mismatch: users per arm {srm['observed']} against the expected "
            f"{srm['expected']} (chi-square p = {srm['p_value']:.2g}): users were lost or "
            "added on one side; do not trust the lifts below until that is explained"
        )
    for name, result in report["lift"].items():
        rel, p, ci = result["relative"], result["p_value"], result["ci"]
        if rel is None or p is None or ci[0] is None:
            lines.append(f"{name} vs {control}: not enough data yet")
            continue
        lines.append(
            f"{name} {_verdict(rel, p, alpha)} {control}: Theme-CTR {arms[name]['ctr']:.4f} vs "
            f"{arms[control]['ctr']:.4f}, lift {rel:+.2%} (95% CI {ci[0]:+.2%} to {ci[1]:+.2%}), "
            f"p = {p:.2g}"
        )
        seq = result.get("sequential") or {}
        if seq.get("p_value") is not None and seq["ci"][0] is not None:
            lo, hi = seq["ci"]
            state = "significant" if seq["p_value"] < alpha else "not significant yet"
            lines.append(
                f"{name} vs {control}, valid at any look: {state} (always-valid 95% CI "
                f"{lo:+.2%} to {hi:+.2%}, p = {seq['p_value']:.2g})"
            )
    for segment, entry in report["segments"].items():
        for name, result in entry["lift"].items():
            p, rel = result.get("p_adjusted"), result["relative"]
            if p is not None and rel is not None and p < alpha:
                lines.append(
                    f"segment {segment}: {name} {_verdict(rel, p, alpha)} {control}, lift "
                    f"{rel:+.2%} (Bonferroni-adjusted p = {p:.2g})"
                )
    return lines
