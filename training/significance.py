"""Paired comparisons of two models on the same test users, pooled over user splits.

On a few hundred test users, which users are tested (the split) moves every model more than
the gaps between models, so a std over runs cannot tell models apart. Comparing them user by
user on the same users removes that: per split, each user's metric is averaged over the
training seeds, the per-user differences of every split are pooled, and a paired t-test
(``scipy.stats``) gives the mean difference, its 95% confidence interval and the p-value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

_EPS = 1e-12
"""Differences below this are rounding (seed means of equal values), not evidence."""

PerUser = Mapping[str, Sequence[float]]
"""One run's ``test_per_user.json``: ``users`` (dense ids) and a list per metric key."""
SplitRuns = Mapping[int, Sequence[PerUser]]
"""split (``prepare --seed``) -> the per-user files of that split's runs (one per seed)."""


def seed_mean(runs: Sequence[PerUser], key: str) -> tuple[list[int], np.ndarray]:
    """Users and each user's ``key`` averaged over the runs of one split (NaN where the
    metric is not defined for the user: no novel or no repeat truth)."""
    users = list(runs[0]["users"])
    for run in runs[1:]:
        if list(run["users"]) != users:
            raise ValueError("runs of one split were evaluated on different test users")
    values = [[np.nan if v is None else v for v in run[key]] for run in runs]
    return users, np.mean(np.asarray(values, dtype=np.float64), axis=0)


def paired_difference(a: SplitRuns, b: SplitRuns, key: str) -> dict[str, Any] | None:
    """Model a minus model b on ``key``, user by user, over the splits both were run on.

    Returns the means of both, the mean difference with its 95% CI, the p-value of a
    two-sided paired t-test and the number of (split, user) pairs; None without a
    common split. Identical per-user values give p = 1 (no evidence of a difference).
    """
    diffs, means_a, means_b = [], [], []
    for split in sorted(set(a) & set(b)):
        users_a, values_a = seed_mean(a[split], key)
        users_b, values_b = seed_mean(b[split], key)
        if users_a != users_b:
            raise ValueError(f"split {split}: the two models were tested on different users")
        diffs.append(values_a - values_b)
        means_a.append(values_a)
        means_b.append(values_b)
    if not diffs or not np.isfinite(np.concatenate(diffs)).any():
        return None
    diff = np.concatenate(diffs)
    defined = np.isfinite(diff)  # the users the metric is defined for
    diff = diff[defined]
    means_a = [np.concatenate(means_a)[defined]]
    means_b = [np.concatenate(means_b)[defined]]
    n = len(diff)
    delta = float(diff.mean())
    if abs(delta) < _EPS:
        delta = 0.0
    if n < 2 or np.ptp(diff) < _EPS:  # no spread: the t statistic is undefined
        low = high = delta
        p_value = 1.0 if delta == 0 else 0.0
    else:
        test = stats.ttest_1samp(diff, 0.0)
        interval = test.confidence_interval(0.95)
        low, high, p_value = float(interval.low), float(interval.high), float(test.pvalue)
    return {
        "a": float(np.concatenate(means_a).mean()),
        "b": float(np.concatenate(means_b).mean()),
        "delta": delta,
        "ci_low": low,
        "ci_high": high,
        "p_value": p_value if not math.isnan(p_value) else 1.0,
        "pairs": n,
    }
