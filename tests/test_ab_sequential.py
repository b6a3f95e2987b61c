"""Always-valid intervals (service.ab.sequential) and the sample-ratio-mismatch check
(service.ab.srm), by hand-computed values and edge cases; their calibration on simulated
A/A tests is in tests/test_ab_calibration.py."""

from __future__ import annotations

import math

import pytest

from service.ab.sequential import multiplier, p_value, rho, sequential_lift
from service.ab.srm import SRM_THRESHOLD, sample_ratio_check
from service.ab.stats import Lift, arm_stats, lift

Z95 = 1.959963984540054


# --------------------------------------------------------------------------- sequential
# α = 0.05, n* = 5000:
#   -2 ln α = 5.991464547;  ρ² = (5.991464547 + ln 6.991464547) / 5000
#          = (5.991464547 + 1.944690055) / 5000 = 0.00158723092
#   n = 5000: nρ² = 7.936154602;  m² = 2·8.936154602/7.936154602 · ln(√8.936154602 / 0.05)
#          = 2.252011220 · ln(59.78680323) = 2.252011220 · 4.090784955 = 9.212493615
#   m = 3.035208990
def test_multiplier_hand_computed_at_the_tuning_point() -> None:
    assert rho(0.05, 5000) ** 2 == pytest.approx(0.00158723092, rel=1e-8)
    assert multiplier(5000, 0.95, 5000) == pytest.approx(3.035208990, rel=1e-8)


def test_multiplier_is_wider_than_the_fixed_interval_and_tightest_near_the_tuning() -> None:
    sizes = [10, 100, 1000, 3000, 5000, 8000, 20_000, 1_000_000]
    widths = [multiplier(n) for n in sizes]
    assert all(w > Z95 for w in widths)
    # the optimum of the approximation behind ρ is near, not at, n* (5200 here)
    assert min(widths) == pytest.approx(min(multiplier(n) for n in range(50, 10**6, 50)), rel=1e-3)
    assert widths[0] > widths[2] > widths[4] < widths[6] < widths[7]
    # another tuning moves the tightest point
    assert multiplier(500, tuning=500) < multiplier(500, tuning=50_000)


def test_p_value_is_below_alpha_exactly_when_the_interval_excludes_zero() -> None:
    n, m = 2000, multiplier(2000)
    assert p_value(m, n) == pytest.approx(0.05, rel=1e-9)
    assert p_value(m * 1.01, n) < 0.05 < p_value(m * 0.99, n)
    assert p_value(0.0, n) == 1.0
    assert p_value(-m * 1.5, n) == p_value(m * 1.5, n)
    assert math.isnan(p_value(1.0, 0)) and math.isnan(p_value(math.nan, 10))


def test_sequential_lift_widens_the_fixed_estimates() -> None:
    control = arm_stats([10] * 400, [1] * 200 + [0] * 200)
    treatment = arm_stats([10] * 400, [1] * 240 + [0] * 160)
    fixed = lift(treatment, control)
    seq = sequential_lift(fixed, 800)
    m = multiplier(800)
    assert seq.ci == pytest.approx(
        (fixed.relative - m * fixed.se_relative, fixed.relative + m * fixed.se_relative)
    )
    assert seq.absolute_ci == pytest.approx(
        (fixed.absolute - m * fixed.se_absolute, fixed.absolute + m * fixed.se_absolute)
    )
    assert seq.ci[0] < fixed.ci[0] < fixed.ci[1] < seq.ci[1]
    assert seq.p_value > fixed.p_value
    assert seq.p_value == pytest.approx(p_value(fixed.absolute / fixed.se_absolute, 800))


def test_sequential_lift_of_undefined_estimates_is_nan() -> None:
    nan = math.nan
    seq = sequential_lift(Lift(nan, (nan, nan), nan, nan), 10)
    assert all(math.isnan(v) for v in (*seq.ci, *seq.absolute_ci, seq.p_value))
    no_users = sequential_lift(Lift(0.1, (0.0, 0.2), 0.3, 0.01, 0.05, 0.005), 0)
    assert math.isnan(no_users.ci[0]) and math.isnan(no_users.p_value)
    with pytest.raises(ValueError, match="alpha"):
        multiplier(10, level=1.0)


# --------------------------------------------------------------------------- SRM
def test_srm_hand_computed() -> None:
    # 520 / 480 against 50/50: expected 500 each, χ² = (20² + 20²) / 500 = 1.6, df 1,
    # p = P(χ²₁ > 1.6) = 0.20590321073206830
    fine = sample_ratio_check({"a": 520, "b": 480}, {"a": 50, "b": 50})
    assert fine.chi2 == pytest.approx(1.6)
    assert fine.p_value == pytest.approx(0.2059032107320683, rel=1e-9)
    assert fine.expected == {"a": 500.0, "b": 500.0} and not fine.mismatch
    # 600 / 400: χ² = 40, p = 2.5e-10: flagged
    broken = sample_ratio_check({"a": 600, "b": 400}, {"a": 50, "b": 50})
    assert broken.chi2 == pytest.approx(40.0)
    assert broken.p_value < 1e-9 and broken.mismatch and broken.threshold == SRM_THRESHOLD


def test_srm_uses_the_weights_not_an_even_split() -> None:
    assert sample_ratio_check({"a": 100, "b": 300}, {"a": 1, "b": 3}).chi2 == pytest.approx(0)
    assert sample_ratio_check({"a": 200, "b": 200}, {"a": 1, "b": 3}).mismatch


def test_srm_edge_cases() -> None:
    empty = sample_ratio_check({"a": 0, "b": 0}, {"a": 1, "b": 1})
    assert math.isnan(empty.p_value) and not empty.mismatch
    single = sample_ratio_check({"a": 10, "off": 0}, {"a": 1, "off": 0})
    assert math.isnan(single.p_value) and not single.mismatch
    leak = sample_ratio_check({"a": 10, "off": 1}, {"a": 1, "off": 0})
    assert leak.p_value == 0 and leak.mismatch
    with pytest.raises(ValueError, match="arms differ"):
        sample_ratio_check({"a": 1}, {"a": 1, "b": 1})
