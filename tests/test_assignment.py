"""Deterministic bucketing and arm ranges (service.ab.assignment)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from itertools import pairwise
from pathlib import Path

import pytest
from scipy import stats

from service.ab.assignment import BUCKETS, arm_ranges, assign, bucket

# Computed once with the current scheme and cross-checked with coreutils:
#   printf '2026-11\x1ftheme-ranking\x1fu1' | sha256sum   -> first 16 hex digits % 10000 = 1191
# A change of the hash, separator, encoding or byte order changes these and fails the test;
# that would silently move every running experiment's users to other arms.
PINNED = [
    (("2026-11", "theme-ranking", "u1"), 1191),
    (("2026-11", "theme-ranking", "user-42"), 2651),
    (("", "", ""), 5340),
    (("s", "e", "ünïcode-用户"), 7661),
]


@pytest.mark.parametrize(("key", "expected"), PINNED)
def test_bucket_pinned_values(key: tuple[str, str, str], expected: int) -> None:
    assert bucket(*key) == expected


def test_bucket_is_deterministic_and_in_range() -> None:
    ids = [f"user-{i}" for i in range(1000)]
    first = [bucket("salt", "exp", u) for u in ids]
    assert first == [bucket("salt", "exp", u) for u in ids]
    assert all(0 <= b < BUCKETS for b in first)
    assert len(set(first)) > 900  # spread, not a constant


def test_bucket_is_identical_in_a_fresh_process() -> None:
    """A new interpreter has a different hash() seed; buckets must not depend on it."""
    ids = [f"user-{i}" for i in range(50)] + ["ünïcode-用户"]
    code = (
        "import sys, json; from service.ab.assignment import bucket; "
        "print(json.dumps([bucket('salt', 'exp', u) for u in json.loads(sys.argv[1])]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(ids)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
        cwd=Path(__file__).resolve().parents[1],
    )
    assert json.loads(out.stdout) == [bucket("salt", "exp", u) for u in ids]


def test_key_parts_are_separated() -> None:
    """("ab", "c") and ("a", "bc") must not collide by plain concatenation."""
    same = sum(bucket("ab", "c", f"u{i}") == bucket("a", "bc", f"u{i}") for i in range(1000))
    assert same < 10  # ~0.1 expected by chance; 1000 if the parts were just concatenated


@pytest.mark.parametrize(
    ("a", "b"),
    [(("s1", "exp"), ("s2", "exp")), (("s", "exp-a"), ("s", "exp-b"))],
    ids=["salt", "experiment"],
)
def test_salt_and_experiment_reshuffle_users(a: tuple[str, str], b: tuple[str, str]) -> None:
    """Users in the treatment half of one experiment are a fresh random half in the other."""
    ranges = arm_ranges([("control", 1), ("treatment", 1)])
    ids = [f"user-{i}" for i in range(4000)]
    in_a = {u for u in ids if assign(*a, u, ranges)[0] == "treatment"}
    in_b = {u for u in ids if assign(*b, u, ranges)[0] == "treatment"}
    # Independent halves overlap on ~50 % of each; identical assignment would give 100 %.
    overlap = len(in_a & in_b) / len(in_a)
    assert 0.4 < overlap < 0.6
    exact_same = sum(bucket(*a, u) == bucket(*b, u) for u in ids)
    assert exact_same < 20  # ~4000 / 10000 expected by chance


@pytest.mark.parametrize(
    ("weights", "expected"),
    [
        ([("a", 1), ("b", 1)], [("a", 0, 5000), ("b", 5000, 10000)]),
        ([("a", 1), ("b", 3)], [("a", 0, 2500), ("b", 2500, 10000)]),
        ([("a", 0), ("b", 1)], [("a", 0, 0), ("b", 0, 10000)]),
        ([("a", 1), ("b", 0)], [("a", 0, 10000), ("b", 10000, 10000)]),
        ([("a", 1), ("b", 1), ("c", 1)], [("a", 0, 3333), ("b", 3333, 6667), ("c", 6667, 10000)]),
        (
            [("a", 20), ("b", 30), ("c", 50)],
            [("a", 0, 2000), ("b", 2000, 5000), ("c", 5000, 10000)],
        ),
        ([("only", 0.3)], [("only", 0, 10000)]),
    ],
)
def test_arm_ranges(weights: list[tuple[str, float]], expected: list[tuple[str, int, int]]) -> None:
    ranges = arm_ranges(weights)
    assert ranges == expected
    # contiguous, half-open, exact cover
    assert ranges[0][1] == 0 and ranges[-1][2] == BUCKETS
    assert all(prev[2] == cur[1] for prev, cur in pairwise(ranges))


def test_arm_ranges_cover_exactly_for_awkward_weights() -> None:
    weights = [(f"arm{i}", w) for i, w in enumerate([0.1, 0.2, 0.3, 1e-9, 7, 0, 0.3333])]
    ranges = arm_ranges(weights)
    assert ranges[0][1] == 0 and ranges[-1][2] == BUCKETS
    assert all(prev[2] == cur[1] for prev, cur in pairwise(ranges))
    assert all(lo <= hi for _, lo, hi in ranges)
    total = sum(w for _, w in weights)
    for (_, w), (_, lo, hi) in zip(weights, ranges, strict=True):
        assert abs((hi - lo) - w / total * BUCKETS) <= 1


@pytest.mark.parametrize(
    "weights",
    [
        [],
        [("a", 1), ("a", 2)],
        [("a", -1), ("b", 2)],
        [("a", 0), ("b", 0)],
        [("a", float("nan")), ("b", 1)],
        [("a", float("inf")), ("b", 1)],
    ],
    ids=["empty", "duplicate", "negative", "all-zero", "nan", "inf"],
)
def test_arm_ranges_rejects(weights: list[tuple[str, float]]) -> None:
    with pytest.raises(ValueError):
        arm_ranges(weights)


def test_assign_returns_arm_owning_the_bucket() -> None:
    ranges = arm_ranges([("a", 1), ("b", 3)])
    for i in range(500):
        arm, b = assign("s", "e", f"u{i}", ranges)
        assert b == bucket("s", "e", f"u{i}")
        assert arm == ("a" if b < 2500 else "b")


def test_assign_ranges_are_half_open() -> None:
    """A bucket equal to a range's ``hi`` belongs to the next range (pinned bucket 1191)."""
    key = ("2026-11", "theme-ranking", "u1")
    assert assign(*key, [("a", 0, 1191), ("b", 1191, BUCKETS)]) == ("b", 1191)
    assert assign(*key, [("a", 0, 1192), ("b", 1192, BUCKETS)]) == ("a", 1191)
    assert assign(*key, [("a", 0, 1191), ("off", 1191, 1191), ("b", 1191, BUCKETS)])[0] == "b"


def test_assign_never_picks_zero_weight_arm() -> None:
    ranges = arm_ranges([("off", 0), ("on", 1), ("off2", 0)])
    assert {assign("s", "e", f"u{i}", ranges)[0] for i in range(2000)} == {"on"}


def test_assign_rejects_ranges_with_a_gap() -> None:
    with pytest.raises(ValueError, match="not covered"):
        assign("2026-11", "theme-ranking", "u1", [("a", 0, 1000), ("b", 2000, BUCKETS)])


@pytest.mark.parametrize(
    "weights",
    [[("control", 50), ("treatment", 50)], [("a", 20), ("b", 30), ("c", 50)]],
    ids=["50-50", "20-30-50"],
)
def test_assignment_proportions_chi_square(weights: list[tuple[str, float]]) -> None:
    """10,000 ids split as the weights say (goodness of fit; fails only with p <= 0.001)."""
    ranges = arm_ranges(weights)
    n = 10_000
    counts = Counter(assign("2026-11", "theme-ranking", f"user-{i}", ranges)[0] for i in range(n))
    total = sum(w for _, w in weights)
    observed = [counts[name] for name, _ in weights]
    expected = [w / total * n for _, w in weights]
    assert sum(observed) == n
    _, p = stats.chisquare(observed, expected)
    assert p > 0.001, (observed, expected, p)
