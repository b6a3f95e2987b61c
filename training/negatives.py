"""What training's negatives look like per tag, and the correction that undoes their bias.

Pointwise BCE learns σ(z) = q / (q + n): it ranks tag t for a user by q(t) / n(t), where
q(t) is how often t is a positive and n(t) how often it is a negative. Item negatives
(explicit low ratings, or sampled untouched items with their global tags) carry the item
tags' popularity, so an uncorrected model pushes popular tags *down*, while a tag profile
should rank by q(t) alone. Adding β·log n(t) to the logit at scoring time (β = 1 in
theory) does that: the sampling-bias ("logQ") correction of Yi et al., RecSys 2019. β is
the ``prior_correction`` hyper-parameter, tuned on validation users.
"""

from __future__ import annotations

import numpy as np


def random_tag_distribution(positive_tags: np.ndarray, n_tags: int, share: float) -> np.ndarray:
    """Probability of each tag as a random tag negative: uniform, mixed with a ``share``
    of (add-one smoothed) positive popularity."""
    popularity = np.bincount(positive_tags, minlength=n_tags) + 1.0
    return (1 - share) / n_tags + share * popularity / popularity.sum()


def negative_tag_rate(
    tags: np.ndarray, labels: np.ndarray, n_tags: int, config: dict
) -> np.ndarray:
    """Expected negative rows per tag in one epoch: the observed label-0 rows plus the
    random tag negatives ``trainer`` draws (``tag_negatives`` per positive row)."""
    positive = labels == 1
    observed = np.bincount(tags[~positive], minlength=n_tags).astype(np.float64)
    drawn = random_tag_distribution(tags[positive], n_tags, config.get("negative_popularity", 0.0))
    return observed + config["tag_negatives"] * int(positive.sum()) * drawn


def score_prior(rate: np.ndarray, beta: float) -> np.ndarray:
    """β·log n(t), centred on the mean rate; tags never drawn as negatives get the
    smallest observed rate instead of log 0."""
    if beta == 0 or not len(rate):
        return np.zeros(len(rate), dtype=np.float32)
    floor = rate[rate > 0].min(initial=1.0)
    safe = np.maximum(rate, floor)
    return (beta * np.log(safe / safe.mean())).astype(np.float32)
