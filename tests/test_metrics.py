"""Ranking metrics on cases computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training.metrics import (
    VIEWS,
    avg_shapley,
    discovery_metrics,
    per_user_metrics,
    ranking_metrics,
    tag_privileged_hr,
    top_k,
    user_means,
)


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


def test_per_user_metrics_are_nan_for_users_without_truth():
    ranked = np.array([[0, 1], [0, 1]])
    truth = truth_matrix([{0}, set()], 3)
    per_user = per_user_metrics(ranked, truth, ks=(1,))
    assert per_user["precision@1"][0] == 1.0 and np.isnan(per_user["precision@1"][1])
    assert user_means(per_user)["precision@1"] == 1.0


def test_novel_and_repeat_views_split_the_truth_by_the_users_history():
    # user 0 used tags {0, 1} before; held out {1, 3}: 1 repeats, 3 is novel
    # user 1 used {2}; held out {2}: nothing novel, so no novel metrics for user 1
    truth = truth_matrix([{1, 3}, {2}], 5)
    history = truth_matrix([{0, 1}, {2}], 5)
    ranked = np.array([[0, 1, 3, 2], [2, 0, 1, 3]])
    ranked_novel = np.array([[3, 2, 4, 4], [0, 1, 3, 4]])  # history tags removed
    per_user = discovery_metrics(ranked, ranked_novel, truth, history, ks=(1, 2))
    assert per_user["ndcg@1"].tolist() == [0.0, 1.0]
    assert per_user["novel_hr@1"][0] == 1.0 and np.isnan(per_user["novel_hr@1"][1])
    assert per_user["repeat_hr@1"].tolist() == [0.0, 1.0]
    assert per_user["repeat_recall@2"].tolist() == [1.0, 1.0]
    means = user_means(per_user)
    assert means["novel_ndcg@2"] == 1.0  # over user 0 only
    assert set(means) >= {f"{view}ndcg@2" for view in VIEWS}
