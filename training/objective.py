"""The training objective: P(tag | user) by softmax over the tag vocabulary.

Why not pointwise BCE on (user, tag, label) rows, as issue 3 did: its negatives come from
untouched items, which carry the tags *everyone* gives, so BCE learns roughly q_u(t)/n(t)
and pushes popular tags the user repeats down; a post-hoc log n(t) correction is global and
cannot undo that per user. A softmax over all tags has no sampled negatives at all (every
other tag is one), costs one forward over T tags per *user*, not per sample, and its
optimum is the user's tag distribution, which is what a ranked profile needs.

- ``listwise_loss``: per user, the cross-entropy between the (SVE-)weighted held-out tags
  and softmax(logits), every user counting once (the metrics average over users).
- ``sampled_softmax_loss``: per held-out (interaction, tag), that tag against K tags drawn
  uniformly for the same interaction ("negatives that keep their item"): the privileged
  pathway's objective, where a full softmax per interaction would cost T forwards. With a
  uniform proposal the log Q correction of Yi et al. is a constant and drops out.
- ``unlikelihood_loss``: −log(1 − p) of tags of real item negatives (MovieLens ratings < 4).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F


def listwise_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean over users (rows with target mass) of −Σ_t y_t log softmax(logits)_t / Σ_t y_t.

    ``logits`` and ``targets`` are [B, T]; ``targets`` holds non-negative masses."""
    mass = targets.sum(dim=-1)
    has = mass > 0
    log_p = torch.log_softmax(logits, dim=-1)
    per_user = -(targets * log_p).sum(dim=-1) / mass.clamp(min=1e-12)
    return per_user[has].sum() / has.sum().clamp(min=1)


def unlikelihood_loss(logits: Tensor, negatives: Tensor) -> Tensor:
    """Mean over users with negatives of the mean −log(1 − p_t) over their negative tags."""
    count = negatives.sum(dim=-1)
    has = count > 0
    log_p = torch.log_softmax(logits, dim=-1)
    # log(1 - p) = log1p(-exp(log p)), clamped away from p = 1
    penalty = -torch.log1p(-log_p.exp().clamp(max=1 - 1e-6))
    per_user = (penalty * negatives).sum(dim=-1) / count.clamp(min=1)
    return per_user[has].sum() / has.sum().clamp(min=1)


def sampled_softmax_loss(
    positive_logits: Tensor, negative_logits: Tensor, weights: Tensor, negative_mask: Tensor
) -> Tensor:
    """Weighted mean over valid positives of −log softmax over {positive} ∪ negatives.

    ``positive_logits`` and ``weights`` are [R, P] (weight 0 on padding), ``negative_logits``
    and ``negative_mask`` [R, K] (False where a draw hit one of the row's positives). Each
    positive competes with its row's negatives only, not with the other positives of the
    same interaction: −log σ-softmax = softplus(logsumexp(negatives) − positive).
    """
    masked = negative_logits.masked_fill(~negative_mask, float("-inf"))
    negative_lse = torch.logsumexp(masked, dim=-1, keepdim=True)  # [R, 1]
    losses = F.softplus(negative_lse - positive_logits)
    return (weights * losses).sum() / weights.sum().clamp(min=1e-12)
