"""Statistics of an A/B report: per-arm CTR with confidence intervals, and the lift.

The unit of randomisation is the user, and one user's clicks are correlated (a user who
likes the ranking clicks on many of their impressions), so impressions are not independent
trials and a binomial interval over impressions would be too narrow. Everything here is
therefore computed over users: the CTR is the ratio of sums ``Σ clicks / Σ impressions``,
i.e. a ratio of two per-user means, and its variance comes from the delta method applied to
those means (Deng et al., "Applying the Delta Method in Metric Analytics", 2018).

Degenerate inputs never raise: statistics that cannot be estimated are ``nan``
(documented per function), so a report for a fresh experiment renders instead of failing.

This module must not import torch, FastAPI or anything from ``training``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = ["ArmStats", "Lift", "arm_stats", "ctr_by_position", "lift"]

_NAN = float("nan")


def _z(level: float) -> float:
    """Two-sided normal quantile for a confidence level, e.g. 1.959964 for 0.95."""
    if not 0 < level < 1:
        raise ValueError(f"confidence level must be in (0, 1), got {level}")
    return float(stats.norm.ppf(1 - (1 - level) / 2))


@dataclass(frozen=True)
class ArmStats:
    """One arm's totals, CTR (ratio of sums), its standard error and confidence interval."""

    users: int
    impressions: int
    clicks: int
    ctr: float
    se: float
    ctr_ci: tuple[float, float]


@dataclass(frozen=True)
class Lift:
    """Treatment vs control: relative lift ``ctr_t / ctr_c - 1`` with its CI, the two-sided
    p-value of ``ctr_t == ctr_c``, and the absolute difference ``ctr_t - ctr_c``; the
    standard errors of both (sequential intervals widen the same estimates)."""

    relative: float
    ci: tuple[float, float]
    p_value: float
    absolute: float
    se_relative: float = _NAN
    se_absolute: float = _NAN


def arm_stats(impressions: np.ndarray, clicks: np.ndarray, level: float = 0.95) -> ArmStats:
    """Per-arm statistics from per-user ``impressions`` and ``clicks`` arrays.

    Users with 0 impressions are excluded (they saw nothing, so they carry no CTR
    information, and including them would only shift both means). With ``n`` remaining users,
    means ``x̄`` (clicks) and ``ȳ`` (impressions) and ``r = x̄ / ȳ``::

        var(r) ≈ (s_x² − 2 r s_xy + r² s_y²) / (n ȳ²)      (sample moments, ddof=1)

    and the interval is ``ctr ± z·se`` clipped to ``[0, 1]``.

    Edge cases: no users → ``ctr``, ``se`` and the CI are ``nan``; one user → ``ctr`` is
    defined but ``se`` and the CI are ``nan`` (a variance needs two users). Raises
    ``ValueError`` on inputs that are not data of this shape (mismatched lengths, negative
    counts, more clicks than impressions), since those are bugs upstream, not small samples.
    """
    z = _z(level)
    imps = np.asarray(impressions, dtype=np.float64).ravel()
    clks = np.asarray(clicks, dtype=np.float64).ravel()
    if imps.shape != clks.shape:
        raise ValueError(f"impressions and clicks differ in length: {imps.size} vs {clks.size}")
    if np.any(imps < 0) or np.any(clks < 0):
        raise ValueError("impressions and clicks must be >= 0")
    if np.any(clks > imps):
        raise ValueError("a user has more clicks than impressions")
    keep = imps > 0
    imps, clks = imps[keep], clks[keep]
    n = int(imps.size)
    total_imps, total_clicks = int(imps.sum()), int(clks.sum())
    if n == 0:
        return ArmStats(0, 0, 0, _NAN, _NAN, (_NAN, _NAN))
    ctr = total_clicks / total_imps
    if n < 2:
        return ArmStats(n, total_imps, total_clicks, ctr, _NAN, (_NAN, _NAN))

    y_mean = imps.mean()
    cov = np.cov(clks, imps, ddof=1)
    s_xx, s_xy, s_yy = cov[0, 0], cov[0, 1], cov[1, 1]
    var = (s_xx - 2 * ctr * s_xy + ctr**2 * s_yy) / (n * y_mean**2)
    # The quadratic form is a variance (of x - r·y), so >= 0 up to rounding.
    se = math.sqrt(max(float(var), 0.0))
    lo, hi = max(ctr - z * se, 0.0), min(ctr + z * se, 1.0)
    return ArmStats(n, total_imps, total_clicks, ctr, se, (lo, hi))


def lift(treatment: ArmStats, control: ArmStats, level: float = 0.95) -> Lift:
    """Relative lift of treatment over control; the arms are independent samples of users.

    ``relative = ctr_t / ctr_c − 1`` with delta-method variance
    ``(ctr_t/ctr_c)² · (se_t²/ctr_t² + se_c²/ctr_c²)`` and CI ``relative ± z·se_rel``
    (symmetric, so for tiny samples it may reach below −1; it is not clipped, so that a
    report shows how uninformative such an interval is).
    The p-value is the two-sided z-test of ``ctr_t − ctr_c`` with
    ``se = sqrt(se_t² + se_c²)``.

    Edge cases (never raises): any ``nan`` CTR or SE, a zero control CTR, or both SEs zero
    make the fields that depend on them ``nan``: ``absolute`` is defined whenever both CTRs
    are; ``relative`` needs ``ctr_c > 0``; its CI needs finite SEs and ``ctr_t > 0`` (the
    formula divides by ``ctr_t``; with ``ctr_t == 0`` it uses ``se_t / ctr_c`` directly);
    the p-value needs finite SEs with a positive combined SE.
    """
    z = _z(level)
    ctr_t, ctr_c = treatment.ctr, control.ctr
    se_t, se_c = treatment.se, control.se

    absolute = ctr_t - ctr_c  # nan if either is nan
    ses_finite = math.isfinite(se_t) and math.isfinite(se_c)

    p_value, se_diff = _NAN, _NAN
    if math.isfinite(absolute) and ses_finite:
        se_diff = math.hypot(se_t, se_c)
        if se_diff > 0:
            p_value = float(2 * stats.norm.sf(abs(absolute) / se_diff))

    relative, ci, se_rel = _NAN, (_NAN, _NAN), _NAN
    if math.isfinite(ctr_t) and math.isfinite(ctr_c) and ctr_c > 0:
        ratio = ctr_t / ctr_c
        relative = ratio - 1
        if ses_finite:
            # ratio² · (se_t²/ctr_t² + se_c²/ctr_c²) == se_t²/ctr_c² + ratio² se_c²/ctr_c²,
            # which stays defined when ctr_t == 0.
            se_rel = math.sqrt(se_t**2 + ratio**2 * se_c**2) / ctr_c
            ci = (relative - z * se_rel, relative + z * se_rel)
    return Lift(relative, ci, p_value, absolute, se_rel, se_diff)


def ctr_by_position(
    positions: np.ndarray, clicked: np.ndarray, max_position: int | None = None
) -> list[dict]:
    """Impressions, clicks and CTR per 0-based position, to see position bias in a report.

    ``positions[i]`` is the slot of impression ``i`` and ``clicked[i]`` whether it was
    clicked. Rows cover positions ``0 .. max_position`` (default: the largest position seen;
    impressions beyond ``max_position`` are ignored); a position without impressions has
    ``ctr`` ``nan``. Raises ``ValueError`` on negative positions or mismatched lengths.
    """
    pos = np.asarray(positions).ravel()
    clk = np.asarray(clicked).ravel()
    if pos.shape != clk.shape:
        raise ValueError(f"positions and clicked differ in length: {pos.size} vs {clk.size}")
    if pos.size and not np.issubdtype(pos.dtype, np.integer):
        raise ValueError(f"positions must be integers, got dtype {pos.dtype}")
    pos = pos.astype(np.int64, copy=False)
    if np.any(pos < 0):
        raise ValueError("positions must be >= 0")
    clk = clk.astype(bool, copy=False)
    if max_position is None:
        if pos.size == 0:
            return []
        max_position = int(pos.max())
    if max_position < 0:
        return []
    keep = pos <= max_position
    pos, clk = pos[keep], clk[keep]
    imps = np.bincount(pos, minlength=max_position + 1)
    clicks = np.bincount(pos, weights=clk, minlength=max_position + 1)
    return [
        {
            "position": p,
            "impressions": int(imps[p]),
            "clicks": int(clicks[p]),
            "ctr": float(clicks[p] / imps[p]) if imps[p] else _NAN,
        }
        for p in range(max_position + 1)
    ]
