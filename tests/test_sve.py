"""Shapley values and SVE weights (training/sve.py) against an independent brute force.

The reference below is written from the definition alone (itertools over subsets,
math.factorial, Python sets) and shares no code with the module under test.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from training.data.ragged import Ragged
from training.sve import (
    DEFAULT_PERMUTATIONS,
    MAX_EXACT_TAGS,
    batch_shapley,
    batch_sve_weights,
    shapley_monte_carlo,
    shapley_values,
    sve_weights,
)

CREDITS = ("contains", "covers")
METHODS = ("exact", "closed_form", "monte_carlo", "auto")


def brute_value(subset: set, clicked: list[set], credit: str) -> float:
    if not subset or not clicked:
        return 0.0
    if credit == "contains":
        return sum(subset <= c for c in clicked) / len(clicked)
    return sum(bool(subset & c) for c in clicked) / len(clicked)


def brute_shapley(item_tags: list, clicked_tag_sets: list, credit: str) -> np.ndarray:
    clicked = [set(c) for c in clicked_tag_sets]
    m = len(item_tags)
    phi = []
    for t in item_tags:
        others = [x for x in item_tags if x != t]
        total = 0.0
        for size in range(m):
            weight = math.factorial(size) * math.factorial(m - size - 1) / math.factorial(m)
            for subset in itertools.combinations(others, size):
                s = set(subset)
                total += weight * (
                    brute_value(s | {t}, clicked, credit) - brute_value(s, clicked, credit)
                )
        phi.append(total)
    return np.array(phi)


def random_case(rng: np.random.Generator, m: int, n_max: int = 12, vocab: int = 24):
    """A coalition of m tags and clicked sets biased to overlap with it."""
    item_tags = [int(t) for t in rng.choice(vocab, size=m, replace=False)]
    clicked = []
    for _ in range(int(rng.integers(0, n_max + 1))):
        inside = [t for t in item_tags if rng.random() < 0.6]
        outside = [int(t) for t in rng.choice(vocab, size=int(rng.integers(0, 4)))]
        clicked.append(inside + outside)
    return item_tags, clicked


def random_cases(seed: int, count: int, m_range=(1, 10)):
    rng = np.random.default_rng(seed)
    for i in range(count):
        m = m_range[0] + i % (m_range[1] - m_range[0] + 1)
        yield random_case(rng, m)


# --- correctness against the brute force ------------------------------------------------


@pytest.mark.parametrize("credit", CREDITS)
@pytest.mark.parametrize("method", ["exact", "closed_form", "auto"])
def test_exact_methods_match_brute_force(credit: str, method: str) -> None:
    for item_tags, clicked in random_cases(seed=1, count=30):
        expected = brute_shapley(item_tags, clicked, credit)
        got = shapley_values(item_tags, clicked, credit, method=method)
        np.testing.assert_allclose(got, expected, atol=1e-12)


@pytest.mark.parametrize("credit", CREDITS)
def test_monte_carlo_matches_brute_force(credit: str) -> None:
    for item_tags, clicked in random_cases(seed=2, count=10):
        expected = brute_shapley(item_tags, clicked, credit)
        got = shapley_values(item_tags, clicked, credit, method="monte_carlo")
        assert np.abs(got - expected).max() < 0.02


def test_default_credit_is_contains() -> None:
    item_tags, clicked = [1, 2, 3], [[1, 2], [2], [3, 4]]
    np.testing.assert_allclose(
        shapley_values(item_tags, clicked),
        brute_shapley(item_tags, clicked, "contains"),
        atol=1e-12,
    )


def test_hand_computed_example() -> None:
    # M = {a, b}; clicked sets {a, b}, {a}: contains V(a)=1, V(b)=1/2, V(ab)=1/2.
    # φ_a = ½(V(a) − 0) + ½(V(ab) − V(b)) = ½; φ_b = ½·½ + ½(½ − 1) = 0.
    np.testing.assert_allclose(shapley_values(["a", "b"], [{"a", "b"}, {"a"}]), [0.5, 0.0])
    # covers: V(a)=1, V(b)=1/2, V(ab)=1 → φ_a = ½·1 + ½·½ = ¾, φ_b = ¼.
    np.testing.assert_allclose(
        shapley_values(["a", "b"], [{"a", "b"}, {"a"}], "covers"), [0.75, 0.25]
    )


# --- axioms -----------------------------------------------------------------------------


@pytest.mark.parametrize("credit", CREDITS)
@pytest.mark.parametrize("method", METHODS)
def test_efficiency(credit: str, method: str) -> None:
    for item_tags, clicked in random_cases(seed=3, count=20):
        phi = shapley_values(item_tags, clicked, credit, method=method)
        v_full = brute_value(set(item_tags), [set(c) for c in clicked], credit)
        # Monte Carlo telescopes per permutation, so it is efficient exactly too.
        assert phi.sum() == pytest.approx(v_full, abs=1e-9)


@pytest.mark.parametrize("credit", CREDITS)
@pytest.mark.parametrize("method", ["exact", "closed_form"])
def test_symmetry(credit: str, method: str) -> None:
    rng = np.random.default_rng(4)
    for _ in range(20):
        item_tags, clicked = random_case(rng, int(rng.integers(3, 9)))
        a, b = item_tags[0], item_tags[1]
        # make a and b always co-occur: each clicked set holds both or neither
        clicked = [
            [t for t in c if t not in (a, b)] + ([a, b] if (a in c or b in c) else [])
            for c in clicked
        ]
        phi = shapley_values(item_tags, clicked, credit, method=method)
        assert phi[0] == pytest.approx(phi[1], abs=1e-12)


@pytest.mark.parametrize("method", ["exact", "closed_form", "monte_carlo"])
def test_null_player_under_covers(method: str) -> None:
    rng = np.random.default_rng(5)
    for _ in range(20):
        item_tags, clicked = random_case(rng, int(rng.integers(2, 9)))
        null = item_tags[-1]
        clicked = [[t for t in c if t != null] for c in clicked]
        phi = shapley_values(item_tags, clicked, "covers", method=method)
        assert phi[-1] == pytest.approx(0.0, abs=1e-12)


# --- closed form ------------------------------------------------------------------------


@pytest.mark.parametrize("credit", CREDITS)
def test_closed_form_equals_exact_up_to_limit(credit: str) -> None:
    rng = np.random.default_rng(6)
    for m in range(1, MAX_EXACT_TAGS + 1):
        for _ in range(4):
            item_tags, clicked = random_case(rng, m, n_max=40, vocab=40)
            np.testing.assert_allclose(
                shapley_values(item_tags, clicked, credit, method="closed_form"),
                shapley_values(item_tags, clicked, credit, method="exact"),
                atol=1e-12,
            )


@pytest.mark.parametrize("credit", CREDITS)
def test_closed_form_large_coalition_is_efficient(credit: str) -> None:
    rng = np.random.default_rng(7)
    item_tags, clicked = random_case(rng, 41, n_max=200, vocab=80)
    clicked.append(list(item_tags))  # one clicked set holding the whole coalition
    for method in ("closed_form", "auto"):
        phi = shapley_values(item_tags, clicked, credit, method=method)
        assert len(phi) == 41
        v_full = brute_value(set(item_tags), [set(c) for c in clicked], credit)
        assert v_full > 0
        assert phi.sum() == pytest.approx(v_full, abs=1e-12)


# --- Monte Carlo ------------------------------------------------------------------------


@pytest.mark.parametrize("credit", CREDITS)
def test_monte_carlo_close_to_exact_and_deterministic(credit: str) -> None:
    rng = np.random.default_rng(8)
    for m in (4, 8, 12):
        item_tags, clicked = random_case(rng, m, n_max=60, vocab=40)
        exact = shapley_values(item_tags, clicked, credit, method="exact")
        phi, stderr = shapley_monte_carlo(item_tags, clicked, credit, n_permutations=5000, seed=3)
        assert np.abs(phi - exact).max() < 0.02
        assert np.all(stderr <= 1 / math.sqrt(5000) + 1e-12)  # documented bound
        assert np.all(np.abs(phi - exact) <= 5 * stderr + 1e-12)
        again = shapley_values(
            item_tags, clicked, credit, method="monte_carlo", n_permutations=5000, seed=3
        )
        np.testing.assert_array_equal(phi, again)
        other = shapley_values(
            item_tags, clicked, credit, method="monte_carlo", n_permutations=5000, seed=4
        )
        assert not np.array_equal(phi, other)
    assert DEFAULT_PERMUTATIONS >= 1000


# --- edges and errors -------------------------------------------------------------------


def test_exact_refuses_more_than_twelve_tags() -> None:
    item_tags = list(range(MAX_EXACT_TAGS + 1))
    with pytest.raises(ValueError, match=str(MAX_EXACT_TAGS)):
        shapley_values(item_tags, [[0, 1]], method="exact")
    shapley_values(item_tags[:-1], [[0, 1]], method="exact")  # 12 is fine


@pytest.mark.parametrize("method", METHODS)
def test_no_clicked_sets_gives_zeros(method: str) -> None:
    np.testing.assert_array_equal(shapley_values([1, 2, 3], [], method=method), np.zeros(3))
    assert shapley_values([], [[1]], method=method).shape == (0,)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="distinct"):
        shapley_values([1, 1, 2], [[1]])
    with pytest.raises(ValueError, match="credit"):
        shapley_values([1], [[1]], credit="overlaps")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="method"):
        shapley_values([1], [[1]], method="guess")  # type: ignore[arg-type]


def test_non_integer_tags_are_not_coerced() -> None:
    # 2.5 is not tag 2; strings and mixed ids go through the general path
    np.testing.assert_array_equal(shapley_values([2, 3], [[2.5, 3], [2]]), [0.0, 0.0])
    np.testing.assert_allclose(
        shapley_values(["x", 3], [["x", 3], ["x"]]), shapley_values([1, 3], [[1, 3], [1]])
    )
    np.testing.assert_allclose(
        shapley_values([1, 3], [["1", 3], [1]]), shapley_values([1, 3], [[3], [1]])
    )


def test_ragged_and_generator_inputs_agree_with_lists() -> None:
    rng = np.random.default_rng(9)
    item_tags, clicked = random_case(rng, 7, n_max=30)
    expected = shapley_values(item_tags, clicked)
    np.testing.assert_allclose(shapley_values(item_tags, Ragged.from_lists(clicked)), expected)
    np.testing.assert_allclose(
        shapley_values(np.array(item_tags), (iter(c) for c in clicked)), expected
    )


# --- SVE weights ------------------------------------------------------------------------


def test_sve_weights_positive_and_negative() -> None:
    phi = np.array([0.3, -0.1, 0.05, 0.2])
    w = sve_weights(phi, 0.1)
    assert w.sum() == pytest.approx(len(phi))
    np.testing.assert_array_equal(np.argsort(w), np.argsort(phi))  # softmax keeps the order
    expected = np.exp(phi / 0.1) / np.exp(phi / 0.1).sum() * len(phi)
    np.testing.assert_allclose(w, expected)
    np.testing.assert_array_equal(sve_weights(phi, 0.1, positive=False), np.ones(4))


def test_sve_weights_temperature() -> None:
    phi = np.array([0.3, -0.1, 0.05, 0.2])
    sharp = sve_weights(phi, 1e-4)
    assert sharp[0] == pytest.approx(4.0) and sharp[1:].max() < 1e-9
    np.testing.assert_allclose(sve_weights(phi, 1e6), np.ones(4), atol=1e-5)
    equal = sve_weights(np.full(5, 0.2), 0.5)
    np.testing.assert_allclose(equal, np.ones(5))


def test_sve_weights_stable_and_validated() -> None:
    w = sve_weights([1000.0, 999.0], 0.01)
    assert np.all(np.isfinite(w)) and w.sum() == pytest.approx(2.0)
    assert sve_weights([], 0.1).shape == (0,)
    for tau in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="tau"):
            sve_weights([0.1, 0.2], tau)


# --- batch versions ---------------------------------------------------------------------


def random_dataset(seed: int, n_users: int = 12):
    rng = np.random.default_rng(seed)
    coalitions, coalition_user, clicked, clicked_user = [], [], [], []
    for u in range(n_users):
        user_tags = rng.choice(40, size=12, replace=False)
        for _ in range(int(rng.integers(0, 8))):
            m = int(rng.integers(0, 16))  # includes empty and > 12-tag coalitions
            coalitions.append([int(t) for t in rng.choice(40, size=m, replace=False)])
            coalition_user.append(u)
        if u % 4 == 3:
            continue  # a user without clicked sets
        for _ in range(int(rng.integers(0, 25))):
            k = int(rng.integers(0, 7))
            clicked.append([int(t) for t in rng.choice(user_tags, size=k, replace=False)])
            clicked_user.append(u)
    # shuffle the clicked sets so users are interleaved
    order = rng.permutation(len(clicked))
    clicked = [clicked[i] for i in order]
    clicked_user = [clicked_user[i] for i in order]
    return coalitions, np.array(coalition_user), clicked, np.array(clicked_user)


@pytest.mark.parametrize("credit", CREDITS)
def test_batch_shapley_matches_per_coalition(credit: str) -> None:
    for seed in range(3):
        coalitions, coalition_user, clicked, clicked_user = random_dataset(seed)
        got = batch_shapley(
            Ragged.from_lists(coalitions),
            coalition_user,
            Ragged.from_lists(clicked),
            clicked_user,
            credit,
        )
        expected = [
            shapley_values(
                c, [k for k, ku in zip(clicked, clicked_user, strict=True) if ku == u], credit
            )
            for c, u in zip(coalitions, coalition_user, strict=True)
        ]
        assert got.dtype == np.float64
        np.testing.assert_allclose(got, np.concatenate(expected), atol=1e-12)


def test_batch_shapley_edges() -> None:
    coalitions = Ragged.from_lists([[1, 2], [], [3]])
    empty = batch_shapley(coalitions, np.array([0, 0, 1]), Ragged.empty(0), np.zeros(0, int))
    np.testing.assert_array_equal(empty, np.zeros(3))
    clicked = Ragged.from_lists([[1, 1, 2], [2]])  # duplicate inside a clicked set
    got = batch_shapley(coalitions, np.array([0, 0, 1]), clicked, np.array([0, 0]))
    np.testing.assert_allclose(got[:2], shapley_values([1, 2], [[1, 2], [2]]))
    assert got[2] == 0.0  # user 1 has no clicked sets
    with pytest.raises(ValueError, match="twice"):
        batch_shapley(Ragged.from_lists([[1, 1]]), np.array([0]), clicked, np.array([0, 0]))


def test_batch_sve_weights_matches_per_segment() -> None:
    rng = np.random.default_rng(10)
    lengths = rng.integers(0, 7, size=200)
    lengths[[0, 1, -1]] = 0  # empty segments at both ends and in a row
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    phi = rng.normal(scale=0.3, size=int(offsets[-1]))
    positive = rng.random(200) < 0.7
    for tau in (0.1, 0.5):
        got = batch_sve_weights(phi, offsets, tau)
        expected = [sve_weights(phi[a:b], tau) for a, b in itertools.pairwise(offsets)]
        np.testing.assert_allclose(got, np.concatenate(expected), rtol=1e-12)
        mixed = batch_sve_weights(phi, offsets, tau, positive=positive)
        expected = [
            sve_weights(phi[a:b], tau, positive=bool(p))
            for (a, b), p in zip(itertools.pairwise(offsets), positive, strict=True)
        ]
        np.testing.assert_allclose(mixed, np.concatenate(expected), rtol=1e-12)
    assert batch_sve_weights(np.zeros(0), np.zeros(4, dtype=np.int64), 0.1).shape == (0,)
    with pytest.raises(ValueError, match="offsets"):
        batch_sve_weights(phi[:-1], offsets, 0.1)
    with pytest.raises(ValueError, match="tau"):
        batch_sve_weights(phi, offsets, 0.0)
