"""Calibration of the A/B report's statistics on simulated A/A tests (and one A/B).

An A/A test compares two arms that are the same, so every "significant" result is a false
positive. At the nominal level α = 5% a sound test has a false-positive rate near 5%.
This script measures, with the report's own functions (``service.ab``):

- the fixed-horizon p-value read once, at the end (should be ≈ 5%);
- the same p-value read at every look, stopping at the first p < 0.05 ("peeking"; far
  above 5%: why the report also has sequential intervals);
- the always-valid p-value read at every look (should stay ≤ 5%);
- the sample-ratio-mismatch check on users split by the real assignment hash, at its
  0.001 threshold and at 0.05;
- the power of each reading on a planted +15% lift (what sequential validity costs).

Users are heterogeneous, as in the report's user-level model: impressions ~ 1 + Poisson(9),
per-user CTR ~ Beta with mean 5%. ``tests/test_ab_calibration.py`` runs a small version.

    python benchmarks/bench_ab_stats.py --sims 4000 --looks 20
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.ab.assignment import arm_ranges, assign
from service.ab.sequential import sequential_lift
from service.ab.srm import sample_ratio_check
from service.ab.stats import arm_stats, lift

ALPHA = 0.05


def simulate_users(
    rng: np.random.Generator, users: int, ctr: float, concentration: float = 20.0
) -> tuple[np.ndarray, np.ndarray]:
    """Per-user impressions and clicks; one user's clicks are correlated (own CTR)."""
    impressions = 1 + rng.poisson(9, size=users)
    user_ctr = rng.beta(ctr * concentration, (1 - ctr) * concentration, size=users)
    return impressions, rng.binomial(impressions, user_ctr)


def one_experiment(
    rng: np.random.Generator, users_per_arm: int, looks: int, ctr: float, lift_factor: float
) -> dict[str, bool]:
    """Significance at the end and at any of ``looks`` evenly spaced looks, fixed and
    sequential, for one simulated experiment (treatment CTR = ``ctr × lift_factor``)."""
    control = simulate_users(rng, users_per_arm, ctr)
    treatment = simulate_users(rng, users_per_arm, ctr * lift_factor)
    fixed_any = sequential_any = False
    fixed_final = sequential_final = False
    for look in range(1, looks + 1):
        n = users_per_arm * look // looks
        c = arm_stats(control[0][:n], control[1][:n])
        t = arm_stats(treatment[0][:n], treatment[1][:n])
        fixed = lift(t, c)
        sequential = sequential_lift(fixed, c.users + t.users)
        fixed_final = fixed.p_value < ALPHA
        sequential_final = sequential.p_value < ALPHA
        fixed_any |= fixed_final
        sequential_any |= sequential_final
    return {
        "fixed, read once at the end": fixed_final,
        "fixed, peeking at every look": fixed_any,
        "sequential, read once at the end": sequential_final,
        "sequential, peeking at every look": sequential_any,
    }


def rejection_rates(
    sims: int,
    users_per_arm: int,
    looks: int,
    seed: int = 0,
    ctr: float = 0.05,
    lift_factor: float = 1.0,
) -> dict[str, float]:
    """Share of ``sims`` experiments found significant by each reading (A/A when
    ``lift_factor`` is 1: the false-positive rates)."""
    rng = np.random.default_rng(seed)
    counts: dict[str, int] = {}
    for _ in range(sims):
        for name, significant in one_experiment(
            rng, users_per_arm, looks, ctr, lift_factor
        ).items():
            counts[name] = counts.get(name, 0) + int(significant)
    return {name: count / sims for name, count in counts.items()}


def srm_rates(experiments: int, users: int, seed: int = 0) -> dict[str, float]:
    """Share of 50/50 experiments (users split by the real hash under a fresh salt each)
    whose SRM check fires at its threshold (0.001) and at 0.05."""
    ranges = arm_ranges([("a", 50), ("b", 50)])
    flagged = flagged_05 = 0
    for run in range(experiments):
        salt = f"calibration-{seed}-{run}"
        counts = {"a": 0, "b": 0}
        for user in range(users):
            counts[assign(salt, "aa", f"u{user}", ranges)[0]] += 1
        check = sample_ratio_check(counts, {"a": 50, "b": 50})
        flagged += check.mismatch
        flagged_05 += check.p_value < 0.05
    return {
        "SRM p < 0.001 (flagged)": flagged / experiments,
        "SRM p < 0.05": flagged_05 / experiments,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sims", type=int, default=4000, help="simulated experiments (4000)")
    parser.add_argument("--users", type=int, default=1000, help="users per arm (1000)")
    parser.add_argument("--looks", type=int, default=20, help="looks per experiment (20)")
    parser.add_argument("--srm-experiments", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    started = time.perf_counter()
    aa = rejection_rates(args.sims, args.users, args.looks, args.seed)
    ab = rejection_rates(args.sims, args.users, args.looks, args.seed + 1, lift_factor=1.15)
    srm = srm_rates(args.srm_experiments, 2 * args.users, args.seed)
    se = (ALPHA * (1 - ALPHA) / args.sims) ** 0.5
    print(f"{args.sims} experiments x {args.looks} looks, {args.users} users per arm, "
          f"alpha {ALPHA}; A/A binomial SE at 5%: {se:.4f}")  # fmt: skip
    print("| reading | A/A false-positive rate | power on a +15% lift |")
    print("|---|---|---|")
    for name in aa:
        print(f"| {name} | {aa[name]:.4f} | {ab[name]:.4f} |")
    print(f"\n{args.srm_experiments} A/A splits of {2 * args.users} users by the assignment hash")
    for name, rate in srm.items():
        print(f"| {name} | {rate:.4f} |")
    print(f"\n{time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
