"""A/B report statistics (service.ab.stats): user-level delta-method CTR and lift."""

from __future__ import annotations

import math

import numpy as np
import pytest

from service.ab.stats import ArmStats, Lift, arm_stats, ctr_by_position, lift

Z95 = 1.959963984540054  # scipy.stats.norm.ppf(0.975)
Z90 = 1.6448536269514722  # scipy.stats.norm.ppf(0.95)


def simulate(
    rng: np.random.Generator, users: int, ctr: float, concentration: float = 20.0
) -> tuple[np.ndarray, np.ndarray]:
    """Per-user impressions (1 + Poisson(9), ~10) and clicks with a per-user CTR drawn from a
    Beta of mean ``ctr``, so clicks of one user are correlated as in real traffic."""
    impressions = 1 + rng.poisson(9, size=users)
    user_ctr = rng.beta(ctr * concentration, (1 - ctr) * concentration, size=users)
    return impressions, rng.binomial(impressions, user_ctr)


# --------------------------------------------------------------------------- hand-computed
# Control, 4 users, (impressions, clicks): (2,1) (4,1) (3,0) (1,1)
#   x = clicks = [1,1,0,1], x̄ = 0.75;   y = impressions = [2,4,3,1], ȳ = 2.5
#   ctr = 3/10 = 0.3
#   s_x²  = (3·0.25² + 0.75²)/3                         = 0.75/3 = 0.25
#   s_y²  = (0.5² + 1.5² + 0.5² + 1.5²)/3                = 5/3
#   s_xy  = (0.25·-0.5 + 0.25·1.5 + -0.75·0.5 + 0.25·-1.5)/3 = -0.5/3 = -1/6
#   var   = (s_x² − 2·r·s_xy + r²·s_y²)/(n·ȳ²) = (0.25 + 0.1 + 0.15)/(4·6.25) = 0.5/25 = 0.02
#   se    = √0.02 = 0.1414213562373095
#   CI95  = 0.3 ± 1.959963984540054·0.1414213562373095 = 0.3 ± 0.27718076486993547
#         = (0.022819235130064452, 0.5771807648699355)
#   CI90  = 0.3 ± 1.6448536269514722·0.14142135623730950 = (0.0673825692646652, 0.5326174307353347)
# Treatment, 5 users, (2,1) (2,2) (4,1) (2,0) (0,0) — the last has no impressions, excluded:
#   x = [1,2,1,0], x̄ = 1;  y = [2,2,4,2], ȳ = 2.5;  ctr = 4/10 = 0.4
#   s_x² = (0+1+0+1)/3 = 2/3;  s_y² = (3·0.25 + 2.25)/3 = 1;
#   s_xy = (0·-0.5 + 1·-0.5 + 0·1.5 + -1·-0.5)/3 = 0
#   var  = (2/3 − 0 + 0.16·1)/25 = (62/75)/25 = 62/1875 = 0.033066…
#   se   = √(62/1875) = 0.1818424226264781
#   CI95 = 0.4 ± 1.959963984540054·0.1818424226264781 = (0.04359540079059154, 0.7564045992094085)
# Lift (treatment vs control):
#   relative = 0.4/0.3 − 1 = 1/3;   absolute = 0.1
#   var_rel  = (4/3)²·(se_t²/0.16 + se_c²/0.09) = (16/9)·(0.206666… + 0.222222…) = 0.762469…
#   se_rel   = 0.8731947868617111
#   CI95     = 1/3 ± 1.959963984540054·0.8731947868617111 = (-1.3780970004037494, 2.044763667070416)
#   se_diff  = √(62/1875 + 0.02) = 0.2303620339089466;  z = 0.1/se_diff = 0.4340993101299245
#   p        = 2·Φ̄(0.4340993101299245) = 0.6642163264415037
CONTROL = (np.array([2, 4, 3, 1]), np.array([1, 1, 0, 1]))
TREATMENT = (np.array([2, 2, 4, 2, 0]), np.array([1, 2, 1, 0, 0]))


def test_arm_stats_hand_computed_control() -> None:
    s = arm_stats(*CONTROL)
    assert (s.users, s.impressions, s.clicks) == (4, 10, 3)
    assert s.ctr == pytest.approx(0.3, rel=1e-12)
    assert s.se == pytest.approx(0.1414213562373095, rel=1e-12)
    assert s.ctr_ci == pytest.approx((0.022819235130064452, 0.5771807648699355), rel=1e-12)


def test_arm_stats_hand_computed_treatment_excludes_zero_impression_users() -> None:
    s = arm_stats(*TREATMENT)
    assert (s.users, s.impressions, s.clicks) == (4, 10, 4)
    assert s.ctr == pytest.approx(0.4, rel=1e-12)
    assert s.se == pytest.approx(0.1818424226264781, rel=1e-12)
    assert s.ctr_ci == pytest.approx((0.04359540079059154, 0.7564045992094085), rel=1e-12)


def test_arm_stats_level_changes_only_the_interval() -> None:
    s = arm_stats(*CONTROL, level=0.90)
    assert s.se == pytest.approx(0.1414213562373095, rel=1e-12)
    assert s.ctr_ci == pytest.approx((0.0673825692646652, 0.5326174307353347), rel=1e-12)
    assert s.ctr_ci[1] - s.ctr_ci[0] == pytest.approx(2 * Z90 * s.se, rel=1e-12)


def test_lift_hand_computed() -> None:
    result = lift(arm_stats(*TREATMENT), arm_stats(*CONTROL))
    assert result.relative == pytest.approx(1 / 3, rel=1e-12)
    assert result.absolute == pytest.approx(0.1, rel=1e-12)
    assert result.ci == pytest.approx((-1.3780970004037494, 2.044763667070416), rel=1e-12)
    assert result.p_value == pytest.approx(0.6642163264415037, rel=1e-12)


def test_ci_is_clipped_to_unit_interval() -> None:
    # Two users with very different CTRs and few impressions: ctr ± z·se leaves [0, 1].
    low = arm_stats(np.array([1, 50]), np.array([1, 0]))
    assert low.ctr_ci[0] == 0.0 and low.ctr - Z95 * low.se < 0
    high = arm_stats(np.array([1, 50]), np.array([0, 50]))
    assert high.ctr_ci[1] == 1.0 and high.ctr + Z95 * high.se > 1


# --------------------------------------------------------------------------- simulations
def test_delta_method_se_matches_user_bootstrap() -> None:
    rng = np.random.default_rng(20261101)
    imps, clicks = simulate(rng, 2000, ctr=0.1, concentration=5.0)
    s = arm_stats(imps, clicks)
    idx = rng.integers(0, imps.size, size=(2000, imps.size))
    boot = clicks[idx].sum(axis=1) / imps[idx].sum(axis=1)
    assert s.se == pytest.approx(boot.std(ddof=1), rel=0.10)
    # ... and it is wider than the (wrong) binomial-over-impressions SE, since users'
    # clicks are correlated: the whole point of the user-level method.
    naive = math.sqrt(s.ctr * (1 - s.ctr) / s.impressions)
    assert s.se > 1.3 * naive


def test_aa_false_positive_rate() -> None:
    """Equal arms: p < 0.05 in about 5 % of 200 seeded A/A tests (binomial 95 %+ range)."""
    rng = np.random.default_rng(7)
    p_values = []
    for _ in range(200):
        a = arm_stats(*simulate(rng, 500, ctr=0.1))
        b = arm_stats(*simulate(rng, 500, ctr=0.1))
        p_values.append(lift(a, b).p_value)
    p = np.array(p_values)
    assert np.all((p >= 0) & (p <= 1))
    assert 0.02 <= np.mean(p < 0.05) <= 0.09
    # roughly uniform: about half below 0.5
    assert 0.35 <= np.mean(p < 0.5) <= 0.65


def test_real_effect_is_detected_and_covered() -> None:
    rng = np.random.default_rng(12)
    control = arm_stats(*simulate(rng, 2000, ctr=0.10))
    treatment = arm_stats(*simulate(rng, 2000, ctr=0.12))
    result = lift(treatment, control)
    assert result.p_value < 0.05
    assert result.ci[0] < 0.2 < result.ci[1]
    assert result.ci[0] > 0  # the interval excludes "no effect" too
    assert result.absolute == pytest.approx(treatment.ctr - control.ctr)


# --------------------------------------------------------------------------- edge cases
# Edge cases must not raise, and not warn either (a RuntimeWarning from numpy dividing by
# zero means a guard is missing and the nan came out by accident).
def _is_nan_pair(pair: tuple[float, float]) -> bool:
    return math.isnan(pair[0]) and math.isnan(pair[1])


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize(
    ("imps", "clicks"),
    [([], []), ([0, 0], [0, 0])],
    ids=["no-users", "only-zero-impression-users"],
)
def test_arm_stats_no_users_is_nan(imps: list[int], clicks: list[int]) -> None:
    s = arm_stats(np.array(imps, dtype=np.int64), np.array(clicks, dtype=np.int64))
    assert (s.users, s.impressions, s.clicks) == (0, 0, 0)
    assert math.isnan(s.ctr) and math.isnan(s.se) and _is_nan_pair(s.ctr_ci)


@pytest.mark.filterwarnings("error")
def test_arm_stats_one_user_has_ctr_but_no_se() -> None:
    s = arm_stats(np.array([4, 0]), np.array([1, 0]))
    assert (s.users, s.impressions, s.clicks) == (1, 4, 1)
    assert s.ctr == 0.25
    assert math.isnan(s.se) and _is_nan_pair(s.ctr_ci)


@pytest.mark.parametrize(
    ("imps", "clicks", "match"),
    [([1, 2], [1], "length"), ([1, -1], [0, 0], ">= 0"), ([1, 2], [2, 0], "more clicks")],
)
def test_arm_stats_rejects_malformed_input(imps: list[int], clicks: list[int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        arm_stats(np.array(imps), np.array(clicks))


@pytest.mark.filterwarnings("error")
def test_lift_with_empty_or_single_user_arms_is_nan() -> None:
    empty = arm_stats(np.array([], dtype=int), np.array([], dtype=int))
    one = arm_stats(np.array([4]), np.array([1]))
    full = arm_stats(*CONTROL)
    for t, c in [(empty, full), (full, empty), (empty, empty)]:
        r = lift(t, c)
        assert math.isnan(r.relative) and math.isnan(r.absolute)
        assert math.isnan(r.p_value) and _is_nan_pair(r.ci)
    # one user: CTRs and point estimates exist, uncertainty does not
    r = lift(one, full)
    assert r.relative == pytest.approx(0.25 / 0.3 - 1)
    assert r.absolute == pytest.approx(-0.05)
    assert math.isnan(r.p_value) and _is_nan_pair(r.ci)


@pytest.mark.filterwarnings("error")
def test_lift_with_zero_control_ctr() -> None:
    control = arm_stats(np.array([3, 5, 2]), np.array([0, 0, 0]))
    assert control.ctr == 0.0 and control.se == 0.0
    r = lift(arm_stats(*CONTROL), control)
    assert math.isnan(r.relative) and _is_nan_pair(r.ci)
    assert r.absolute == pytest.approx(0.3)
    # the difference is still testable: se_diff = se_t = √0.02
    assert r.p_value == pytest.approx(0.03389485352468927, rel=1e-9)


@pytest.mark.filterwarnings("error")
def test_lift_with_zero_treatment_ctr_is_minus_one() -> None:
    treatment = arm_stats(np.array([3, 5, 2]), np.array([0, 0, 0]))
    r = lift(treatment, arm_stats(*CONTROL))
    assert r.relative == pytest.approx(-1.0)
    # se_rel = √(0 + 0·se_c²)/ctr_c = 0: (ctr_t/ctr_c)² · se_c²/ctr_c² with ctr_t = 0
    assert r.ci == pytest.approx((-1.0, -1.0))


@pytest.mark.filterwarnings("error")
def test_lift_with_zero_variance_arms_has_nan_p_value() -> None:
    same = arm_stats(np.array([2, 2]), np.array([1, 1]))
    assert same.se == 0.0
    r = lift(same, same)
    assert r.relative == 0.0 and r.absolute == 0.0
    assert math.isnan(r.p_value)


@pytest.mark.filterwarnings("error")
def test_lift_accepts_hand_built_nan_arm() -> None:
    nan_arm = ArmStats(0, 0, 0, math.nan, math.nan, (math.nan, math.nan))
    r = lift(nan_arm, nan_arm)
    assert isinstance(r, Lift)
    assert math.isnan(r.relative) and math.isnan(r.p_value) and math.isnan(r.absolute)


def test_invalid_level_is_rejected() -> None:
    with pytest.raises(ValueError, match="level"):
        arm_stats(*CONTROL, level=1.0)


# --------------------------------------------------------------------------- by position
def test_ctr_by_position() -> None:
    positions = np.array([0, 0, 1, 2, 2, 2])
    clicked = np.array([1, 0, 0, 1, 1, 0])
    rows = ctr_by_position(positions, clicked)
    assert [(r["position"], r["impressions"], r["clicks"]) for r in rows] == [
        (0, 2, 1),
        (1, 1, 0),
        (2, 3, 2),
    ]
    assert [r["ctr"] for r in rows] == pytest.approx([0.5, 0.0, 2 / 3])


@pytest.mark.filterwarnings("error")
def test_ctr_by_position_max_position_pads_and_truncates() -> None:
    positions = np.array([0, 0, 1, 2, 2, 2])
    clicked = np.array([True, False, False, True, True, False])
    padded = ctr_by_position(positions, clicked, max_position=3)
    assert len(padded) == 4
    assert padded[3]["impressions"] == 0 and padded[3]["clicks"] == 0
    assert math.isnan(padded[3]["ctr"])
    truncated = ctr_by_position(positions, clicked, max_position=1)
    assert [(r["impressions"], r["clicks"]) for r in truncated] == [(2, 1), (1, 0)]


@pytest.mark.filterwarnings("error")
def test_ctr_by_position_edge_cases() -> None:
    assert ctr_by_position(np.array([], dtype=int), np.array([], dtype=bool)) == []
    with pytest.raises(ValueError, match=">= 0"):
        ctr_by_position(np.array([0, -1]), np.array([0, 1]))
    with pytest.raises(ValueError, match="length"):
        ctr_by_position(np.array([0, 1]), np.array([0]))
    with pytest.raises(ValueError, match="integers"):
        ctr_by_position(np.array([0.5]), np.array([1]))
