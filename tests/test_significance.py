"""Paired per-user comparisons against hand-computed t-tests."""

from __future__ import annotations

import math

import pytest

from training.significance import paired_difference, seed_mean


def run(users: list[int], ndcg: list[float]) -> dict:
    return {"users": users, "ndcg@10": ndcg}


def test_pooled_paired_t_test_matches_the_hand_computation():
    # differences 0.1, 0.2 (split 0) and 0.3, 0.2 (split 1): mean 0.2, sd 0.08165 (ddof 1),
    # se 0.040825, t = 4.899 with 3 df -> two-sided p = 0.01628; CI 0.2 ± 3.1824 * se
    a = {0: [run([1, 2], [0.5, 0.6])], 1: [run([7, 8], [0.9, 0.4])]}
    b = {0: [run([1, 2], [0.4, 0.4])], 1: [run([7, 8], [0.6, 0.2])]}
    out = paired_difference(a, b, "ndcg@10")
    se = math.sqrt(0.02 / 3) / 2
    assert out["delta"] == pytest.approx(0.2)
    assert out["ci_low"] == pytest.approx(0.2 - 3.182446 * se, abs=1e-5)
    assert out["ci_high"] == pytest.approx(0.2 + 3.182446 * se, abs=1e-5)
    assert out["p_value"] == pytest.approx(0.01628, abs=2e-5)
    assert out["pairs"] == 4
    assert out["a"] == pytest.approx(0.6) and out["b"] == pytest.approx(0.4)


def test_seeds_of_a_split_are_averaged_per_user_before_pairing():
    users, mean = seed_mean([run([3, 4], [0.2, 0.0]), run([3, 4], [0.4, 1.0])], "ndcg@10")
    assert users == [3, 4] and mean.tolist() == pytest.approx([0.3, 0.5])
    a = {0: [run([3, 4], [0.2, 0.0]), run([3, 4], [0.4, 1.0])]}
    b = {0: [run([3, 4], [0.3, 0.5])]}
    out = paired_difference(a, b, "ndcg@10")
    assert out["delta"] == 0.0 and out["p_value"] == 1.0


def test_only_common_splits_count_and_mismatched_users_are_refused():
    a = {0: [run([1, 2], [1.0, 0.0])], 5: [run([1, 2], [1.0, 1.0])]}
    b = {0: [run([1, 2], [0.0, 0.0])]}
    assert paired_difference(a, b, "ndcg@10")["pairs"] == 2
    assert paired_difference(a, {9: b[0]}, "ndcg@10") is None
    with pytest.raises(ValueError, match="different users"):
        paired_difference(a, {0: [run([1, 3], [0.0, 0.0])]}, "ndcg@10")
    with pytest.raises(ValueError, match="different test users"):
        seed_mean([run([1, 2], [0.0, 0.0]), run([2, 1], [0.0, 0.0])], "ndcg@10")
