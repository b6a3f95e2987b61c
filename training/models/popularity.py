"""``mostpop`` and ``userpop``: the counting baselines every model must beat.

They are parameter-free modules with the same ``score_all`` as the neural models, so the
same evaluation (and later the same ONNX export) applies to them.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from training.models.layers import UserBatch

USERPOP_BACKOFF = 1e-3
"""Weight of global popularity under the user's own frequencies: a tie-breaker that
ranks the user's tags first and fills the rest of the list by popularity."""


class MostPop(nn.Module):
    """Global tag popularity among the training positives, the same for every user."""

    learned = False

    def __init__(self, popularity: Tensor) -> None:
        super().__init__()
        self.register_buffer("popularity", popularity.to(torch.float32))

    def score_all(self, user: UserBatch) -> Tensor:
        return self.popularity.unsqueeze(0).expand(user["hist_tags"].shape[0], -1)


class UserPop(MostPop):
    """The user's own history tag frequency, backed off to global popularity."""

    def score_all(self, user: UserBatch) -> Tensor:
        ids, weights = user["hist_tags"], user["hist_tags_w"]
        freq = torch.zeros(
            ids.shape[0], self.popularity.shape[0], dtype=weights.dtype, device=ids.device
        ).scatter_add(1, ids, weights)
        return freq + USERPOP_BACKOFF * self.popularity / self.popularity.max().clamp(min=1e-12)
