"""Deterministic assignment of users to experiment arms.

A user's bucket is a pure function of ``(salt, experiment, user_id)``: the first 8 bytes of
the SHA-256 of ``f"{salt}\\x1f{experiment}\\x1f{user_id}"`` (UTF-8), big-endian, modulo
:data:`BUCKETS`. Python's ``hash()`` is salted per process, so it is never used: the same user
must land in the same arm in every worker, after every restart and on every platform, or the
arms' metrics would mix.

The salt and the experiment name are both part of the key so that two experiments (or a
re-run of one under a new salt) shuffle users independently; otherwise the same users would
always be treated together and effects of one experiment would leak into another.

Arms own contiguous half-open bucket ranges ``[lo, hi)`` proportional to their weights.
Changing the weights, or adding, removing or reordering arms, moves the range boundaries and
therefore reassigns users; nothing here promises that a user keeps their arm across such a
change, so start a new salt when an experiment's design changes.

This module must not import torch, FastAPI or anything from ``training``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

__all__ = ["BUCKETS", "arm_ranges", "assign", "bucket"]

BUCKETS = 10_000
"""Number of buckets; weights are resolved to 1/BUCKETS (0.01 %) of traffic."""

_SEP = "\x1f"
"""ASCII unit separator between the key's parts, so that ("a", "bc") and ("ab", "c") differ."""


def bucket(salt: str, experiment: str, user_id: str) -> int:
    """The user's bucket in ``[0, BUCKETS)``; stable across processes, restarts and platforms."""
    key = f"{salt}{_SEP}{experiment}{_SEP}{user_id}".encode()
    digest = hashlib.sha256(key).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def arm_ranges(weights: Sequence[tuple[str, float]]) -> list[tuple[str, int, int]]:
    """Contiguous half-open ranges ``(name, lo, hi)`` covering ``[0, BUCKETS)`` exactly.

    Boundaries are ``round(cumulative_weight / total * BUCKETS)``, so each arm's share is its
    weight's share up to one bucket of rounding, and the last boundary is exactly ``BUCKETS``.
    An arm of weight 0 gets an empty range (``lo == hi``) and receives nobody.

    Raises ``ValueError`` on an empty list, duplicate names, negative or non-finite weights
    or weights that are all zero.
    """
    if not weights:
        raise ValueError("arm_ranges: no arms given")
    names = [name for name, _ in weights]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"arm_ranges: duplicate arm names {duplicates}")
    for name, weight in weights:
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(
                f"arm_ranges: weight of arm {name!r} must be finite and >= 0, got {weight}"
            )
    total = math.fsum(weight for _, weight in weights)
    if total <= 0:
        raise ValueError("arm_ranges: all weights are zero")

    ranges: list[tuple[str, int, int]] = []
    cumulative = 0.0
    lo = 0
    for i, (name, weight) in enumerate(weights):
        cumulative += weight
        # The last boundary is pinned so float rounding can never leave a bucket uncovered.
        hi = BUCKETS if i == len(weights) - 1 else round(cumulative / total * BUCKETS)
        hi = min(max(hi, lo), BUCKETS)
        ranges.append((name, lo, hi))
        lo = hi
    return ranges


def assign(
    salt: str, experiment: str, user_id: str, ranges: list[tuple[str, int, int]]
) -> tuple[str, int]:
    """``(arm, bucket)`` of the user, given ranges from :func:`arm_ranges`.

    Raises ``ValueError`` if no range holds the bucket (ranges not from :func:`arm_ranges`).
    """
    b = bucket(salt, experiment, user_id)
    for name, lo, hi in ranges:
        if lo <= b < hi:
            return name, b
    raise ValueError(f"assign: bucket {b} is not covered by the ranges {ranges}")
