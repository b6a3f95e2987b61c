"""Always-valid (sequential) confidence intervals: a running test may be watched, and
stopped, at any time without inflating false positives.

A fixed-horizon 95% interval is valid once, at a sample size chosen in advance. Looked at
every day and acted on the first time it excludes 0, an A/A test "wins" far more often
than 5% of the time (about 20% with 10 looks; benchmarks/RESULTS.md). A *confidence
sequence* holds at every sample size at once: with probability 1 − α the true effect is
inside all of its intervals, whenever one looks.

We use the asymptotic confidence sequence of Waudby-Smith, Arbour, Sinha, Kennedy and
Ramdas ("Time-uniform central limit theory and asymptotic confidence sequences", 2023),
which GrowthBook's sequential engine uses: the fixed interval ``estimate ± z·se`` becomes
``estimate ± m(n)·se`` with, for ``n`` users in the compared arms,

    m(n)² = 2 (nρ² + 1) / (nρ²) · log( √(nρ² + 1) / α )

and ``ρ`` chosen so that the sequence is tightest at ``n*`` users (``tuning``; eq. 161 of
the paper's arXiv v7). It is a normal-mixture likelihood-ratio bound, so it inverts to
the always-valid p-value ``min(1, √(nρ² + 1) · exp(−z² nρ² / (2(nρ² + 1))))``, which is
below α exactly when the interval excludes 0.

This module must not import torch, FastAPI or anything from ``training``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from service.ab.stats import Lift

__all__ = ["DEFAULT_TUNING", "SequentialLift", "multiplier", "rho", "sequential_lift"]

DEFAULT_TUNING = 5000
"""Users at which the intervals are tightest (GrowthBook's default); the width elsewhere
changes slowly with it, and the guarantee holds for any value."""

_NAN = float("nan")


@dataclass(frozen=True)
class SequentialLift:
    """Always-valid counterparts of a :class:`~service.ab.stats.Lift`'s CIs and p-value."""

    ci: tuple[float, float]
    absolute_ci: tuple[float, float]
    p_value: float


def rho(alpha: float, tuning: float = DEFAULT_TUNING) -> float:
    """The mixture's ``ρ`` that makes the sequence tightest at ``tuning`` users."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if tuning <= 0:
        raise ValueError(f"tuning must be > 0 users, got {tuning}")
    log_alpha = -2 * math.log(alpha)
    return math.sqrt((log_alpha + math.log(log_alpha + 1)) / tuning)


def multiplier(n: int, level: float = 0.95, tuning: float = DEFAULT_TUNING) -> float:
    """``m(n)``: the interval is ``estimate ± m(n)·se``; ``nan`` for ``n < 1``. It is larger
    than the fixed ``z`` (1.96 at 95%) at every ``n``: the price of looking at any time."""
    if n < 1:
        return _NAN
    alpha = 1 - level
    nr2 = n * rho(alpha, tuning) ** 2
    return math.sqrt(2 * (nr2 + 1) / nr2 * math.log(math.sqrt(nr2 + 1) / alpha))


def p_value(z: float, n: int, level: float = 0.95, tuning: float = DEFAULT_TUNING) -> float:
    """Always-valid p-value of a z-statistic after ``n`` users (``ρ`` from ``level``)."""
    if n < 1 or not math.isfinite(z):
        return _NAN
    nr2 = n * rho(1 - level, tuning) ** 2
    return min(1.0, math.sqrt(nr2 + 1) * math.exp(-(z**2) * nr2 / (2 * (nr2 + 1))))


def sequential_lift(
    fixed: Lift, n: int, level: float = 0.95, tuning: float = DEFAULT_TUNING
) -> SequentialLift:
    """The always-valid intervals and p-value around ``fixed``'s estimates, for ``n`` users
    in the two arms together. Undefined parts of ``fixed`` stay ``nan``."""
    m = multiplier(n, level, tuning)

    def interval(estimate: float, se: float) -> tuple[float, float]:
        if not (math.isfinite(estimate) and math.isfinite(se) and math.isfinite(m)):
            return (_NAN, _NAN)
        return (estimate - m * se, estimate + m * se)

    p, se = _NAN, fixed.se_absolute
    if math.isfinite(fixed.absolute) and math.isfinite(se) and se > 0:
        p = p_value(fixed.absolute / se, n, level, tuning)
    return SequentialLift(
        ci=interval(fixed.relative, fixed.se_relative),
        absolute_ci=interval(fixed.absolute, fixed.se_absolute),
        p_value=p,
    )
