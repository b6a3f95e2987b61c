"""Ranking metrics on cases computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training.metrics import avg_shapley, ranking_metrics, tag_privileged_hr, top_k


def truth_matrix(rows: list[set[int]], n_tags: int) -> np.ndarray:
    truth = np.zeros((len(rows), n_tags), dtype=bool)
    for u, tags in enumerate(rows):
        truth[u, list(tags)] = True
    return truth


def test_top_k_orders_best_first_and_breaks_ties_by_index():
    scores = np.array([[0.1, 0.9, 0.5, 0.9], [3.0, 2.0, 1.0, 0.0]])
    assert top_k(scores, 3).tolist() == [[1, 3, 2], [0, 1, 2]]


def test_hand_computed_case():
    # user 0: ranked [2, 0, 1, 3], truth {0, 3}; hits at ranks 2 and 4
    # user 1: ranked [1, 2, 3, 0], truth {1};    hit at rank 1
    ranked = np.array([[2, 0, 1, 3], [1, 2, 3, 0]])
    truth = truth_matrix([{0, 3}, {1}], 4)
    m = ranking_metrics(ranked, truth, ks=(2, 4))
    assert m["precision@2"] == pytest.approx((1 / 2 + 1 / 2) / 2)
    assert m["recall@2"] == pytest.approx((1 / 2 + 1) / 2)
    assert m["hr@2"] == pytest.approx(1.0)
    ndcg0_2 = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    assert m["ndcg@2"] == pytest.approx((ndcg0_2 + 1.0) / 2)
    ndcg0_4 = (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3))
    assert m["ndcg@4"] == pytest.approx((ndcg0_4 + 1.0) / 2)
    assert m["precision@4"] == pytest.approx((2 / 4 + 1 / 4) / 2)
    assert m["recall@4"] == pytest.approx(1.0)


def test_ideal_dcg_uses_min_of_k_and_truth_size():
    ranked = np.array([[0, 1, 2, 3, 4]])
    truth = truth_matrix([{0, 1, 2, 3, 4}], 6)
    assert ranking_metrics(ranked, truth, ks=(2,))["ndcg@2"] == pytest.approx(1.0)
    miss_first = ranking_metrics(np.array([[5, 0]]), truth, ks=(2,))["ndcg@2"]
    assert miss_first == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))


def test_users_with_empty_truth_are_left_out():
    ranked = np.array([[0, 1], [0, 1]])
    truth = truth_matrix([{0}, set()], 3)
    assert ranking_metrics(ranked, truth, ks=(1,))["precision@1"] == 1.0


def test_avg_shapley_and_tag_privileged_hr():
    ranked = np.array([[0, 1], [2, 1]])
    shap = np.array([0.5, 0.1, -0.2])
    assert avg_shapley(ranked, shap, ks=(1, 2)) == {
        "avg_shapley@1": pytest.approx((0.5 - 0.2) / 2),
        "avg_shapley@2": pytest.approx((0.5 + 0.1 - 0.2 + 0.1) / 4),
    }
    tag_priv = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=bool)
    user_priv = np.array([[0, 1, 0], [0, 0, 1]], dtype=bool)
    hr = tag_privileged_hr(ranked, tag_priv, user_priv, ks=(1, 2))
    assert hr == {"tag_privileged_hr@1": 0.5, "tag_privileged_hr@2": 1.0}
