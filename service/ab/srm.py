"""Sample-ratio mismatch (SRM): are the users split between the arms as the weights say?

A mismatch means users were lost or added on one side (a crash in one arm's code path,
a bot, a redirect, logging that fails for one ranker). The arms then no longer compare
like with like, and every lift in the report is suspect whatever its p-value. Like
GrowthBook and Statsig, we run Pearson's chi-square goodness-of-fit test of the users per
arm against the configured weights and flag p < 0.001: a strict threshold, because the
check runs on every look at every experiment and a false alarm costs a healthy test.

This module must not import torch, FastAPI or anything from ``training``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = ["SRM_THRESHOLD", "SampleRatio", "sample_ratio_check"]

SRM_THRESHOLD = 0.001


@dataclass(frozen=True)
class SampleRatio:
    """Observed and expected users per arm, the chi-square statistic and its p-value."""

    observed: dict[str, int]
    expected: dict[str, float]
    chi2: float
    p_value: float
    threshold: float = SRM_THRESHOLD

    @property
    def mismatch(self) -> bool:
        """True when the split is too unlikely under the weights (``nan`` p: no)."""
        return self.p_value < self.threshold


def sample_ratio_check(
    users: Mapping[str, int], weights: Mapping[str, float], threshold: float = SRM_THRESHOLD
) -> SampleRatio:
    """Chi-square test of ``users`` per arm against the arms' relative ``weights``.

    An arm of weight 0 expects nobody: any user in it is a certain mismatch (p = 0).
    No users at all, or a single arm with traffic, leave nothing to test (p ``nan``).
    """
    if set(users) != set(weights):
        raise ValueError(f"arms differ: users {sorted(users)} vs weights {sorted(weights)}")
    total = sum(users.values())
    weight_sum = math.fsum(weights.values())
    if weight_sum <= 0:
        raise ValueError("all weights are 0")
    expected = {arm: total * weights[arm] / weight_sum for arm in weights}
    observed = {arm: int(users[arm]) for arm in weights}
    if any(expected[arm] == 0 and observed[arm] > 0 for arm in weights):
        return SampleRatio(observed, expected, math.inf, 0.0, threshold)
    live = [arm for arm in weights if expected[arm] > 0]
    if total == 0 or len(live) < 2:
        return SampleRatio(observed, expected, float("nan"), float("nan"), threshold)
    result = stats.chisquare(
        np.array([observed[a] for a in live], dtype=np.float64),
        np.array([expected[a] for a in live], dtype=np.float64),
    )
    return SampleRatio(observed, expected, float(result.statistic), float(result.pvalue), threshold)
