"""The report's statistics on simulated A/A tests: false positives near 5% when read once,
inflated by peeking at fixed-horizon p-values, and held at or below 5% by the always-valid
ones, whenever they are read. benchmarks/bench_ab_stats.py runs the same with more
experiments; its figures are in benchmarks/RESULTS.md."""

from __future__ import annotations

from benchmarks.bench_ab_stats import rejection_rates, srm_rates


def test_aa_false_positive_rates_with_and_without_peeking() -> None:
    # 400 A/A experiments (binomial SE of a 5% rate: 1.1%), 8 looks each
    rates = rejection_rates(sims=400, users_per_arm=600, looks=8, seed=3)
    assert 0.025 <= rates["fixed, read once at the end"] <= 0.085
    assert rates["fixed, peeking at every look"] >= 0.10  # the peeking problem
    assert rates["sequential, peeking at every look"] <= 0.05
    assert rates["sequential, read once at the end"] <= rates["sequential, peeking at every look"]


def test_sequential_intervals_still_detect_a_real_effect() -> None:
    rates = rejection_rates(sims=60, users_per_arm=3000, looks=4, seed=4, lift_factor=1.3)
    assert rates["sequential, peeking at every look"] >= 0.8
    assert rates["fixed, read once at the end"] >= rates["sequential, read once at the end"]


def test_srm_check_is_quiet_on_the_real_assignment_hash() -> None:
    rates = srm_rates(experiments=150, users=1000, seed=1)
    assert rates["SRM p < 0.001 (flagged)"] <= 0.02
    assert 0.0 < rates["SRM p < 0.05"] <= 0.12
