"""The training objective on cases computed by hand (``training.objective``)."""

from __future__ import annotations

import math

import pytest
import torch

from training.objective import listwise_loss, sampled_softmax_loss, unlikelihood_loss


def test_listwise_loss_is_the_per_user_cross_entropy_of_the_target_mass() -> None:
    logits = torch.tensor([[0.0, math.log(3.0), 0.0], [1.0, 1.0, 1.0]])
    targets = torch.tensor([[0.0, 2.0, 2.0], [1.0, 0.0, 0.0]])
    # user 0: p = (1/5, 3/5, 1/5), half the mass on each of tags 1 and 2
    user0 = -(0.5 * math.log(3 / 5) + 0.5 * math.log(1 / 5))
    user1 = -math.log(1 / 3)
    assert float(listwise_loss(logits, targets)) == pytest.approx((user0 + user1) / 2)


def test_listwise_loss_counts_every_user_once_and_skips_users_without_targets() -> None:
    logits = torch.randn(3, 5, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([[1.0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 3.0, 0, 0, 0]])
    scaled = targets * torch.tensor([[7.0], [1.0], [0.5]])  # mass scale is irrelevant per user
    assert float(listwise_loss(logits, scaled)) == pytest.approx(
        float(listwise_loss(logits, targets))
    )
    only = listwise_loss(logits[[0, 2]], targets[[0, 2]])
    assert float(listwise_loss(logits, targets)) == pytest.approx(float(only))
    assert float(listwise_loss(logits, torch.zeros(3, 5))) == 0.0


def test_unlikelihood_is_minus_log_one_minus_p_of_the_negative_tags() -> None:
    logits = torch.tensor([[0.0, math.log(3.0), 0.0]])
    negatives = torch.tensor([[False, True, False]])
    assert float(unlikelihood_loss(logits, negatives)) == pytest.approx(-math.log(1 - 3 / 5))
    assert float(unlikelihood_loss(logits, torch.zeros(1, 3, dtype=torch.bool))) == 0.0


def test_sampled_softmax_scores_each_positive_against_its_rows_negatives() -> None:
    positive = torch.tensor([[2.0], [0.0]])
    negative = torch.tensor([[0.0, 1.0, 5.0], [0.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, False], [True, True, True]])  # 5.0 was an accidental hit
    weights = torch.tensor([[1.0], [3.0]])
    row0 = -math.log(math.exp(2) / (math.exp(2) + 1 + math.e))
    row1 = -math.log(1 / 4)
    expected = (1 * row0 + 3 * row1) / 4
    assert float(sampled_softmax_loss(positive, negative, weights, mask)) == pytest.approx(expected)


def test_sampled_softmax_ignores_padded_positives_and_rows_without_negatives() -> None:
    positive = torch.tensor([[1.0, -3.0]])
    negative = torch.tensor([[0.0, 0.0]])
    weights = torch.tensor([[1.0, 0.0]])
    mask = torch.ones(1, 2, dtype=torch.bool)
    expected = -math.log(math.e / (math.e + 2))
    loss = sampled_softmax_loss(positive, negative, weights, mask)
    assert float(loss) == pytest.approx(expected)
    no_negative = sampled_softmax_loss(positive, negative, weights, torch.zeros_like(mask))
    assert float(no_negative) == 0.0  # nothing to compete with: no loss, no NaN
