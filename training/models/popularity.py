"""Counting: ``mostpop``, ``userpop``, ``cooccur`` and the offset every learned model starts from.

The counting baselines are parameter-free modules with the same ``score_all`` as the neural
models, so the same evaluation and ONNX export apply to them. ``CountingOffset`` gives the
learned models ``log userpop`` as a fixed offset of their logits: with a zero residual a
learned model ranks exactly like ``userpop`` (its own tags by frequency, then popularity),
which is what "never below counting, by construction" rests on.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from training.models.layers import CoOccurrence, UserBatch, candidate_frequency, history_frequency

USERPOP_BACKOFF = 1e-3
"""Weight of global popularity under the user's own frequencies: a tie-breaker that
ranks the user's tags first and fills the rest of the list by popularity."""

LOG_FLOOR = 1e-12
"""Keeps log finite for tags nobody used in training (their userpop score is 0)."""


def userpop_scores(user: UserBatch, relative_popularity: Tensor) -> Tensor:
    """[B, T] the user's normalised history frequency plus the popularity back-off."""
    freq = history_frequency(user, relative_popularity.shape[0])
    return freq + USERPOP_BACKOFF * relative_popularity


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
        relative = self.popularity / self.popularity.max().clamp(min=1e-12)
        return userpop_scores(user, relative)


class CoOccur(MostPop):
    """Item-to-item over tags: score(t) = Σ_h w_u(h)·P(t | h), backed off to popularity.

    P(t | h) is the share of train users who used h that also used t (``CoOccurrence``). A
    user without history gets plain popularity.
    """

    def __init__(self, popularity: Tensor, counts: Tensor) -> None:
        super().__init__(popularity)
        self.cooccurrence = CoOccurrence(len(popularity))
        self.cooccurrence.counts.copy_(counts)

    def score_all(self, user: UserBatch) -> Tensor:
        relative = self.popularity / self.popularity.max().clamp(min=1e-12)
        return self.cooccurrence(user, None) + USERPOP_BACKOFF * relative


class CountingOffset(nn.Module):
    """log of the counting estimate: the fixed part of every learned model's logit.

    For a tag the user used, userpop's score (its history frequency plus the popularity
    back-off); for any other tag, the back-off times cooccur's score (co-occurrence with the
    user's tags, itself backed off to popularity). An untrained model thus ranks the user's
    own tags exactly like ``userpop``, then the rest exactly like ``cooccur``: it starts at
    the better of the two counting baselines on either question a profile answers.

    ``popularity`` (the train share of each tag) is a buffer filled by the trainer, so a
    checkpoint and the exported graph carry it. The offset is multiplied by a positive
    scale exp(log_scale), learned from 1 when ``learn_scale`` (so the model may soften
    counting without ever reversing it).
    """

    def __init__(self, n_tags: int, learn_scale: bool = True) -> None:
        super().__init__()
        self.register_buffer("popularity", torch.zeros(n_tags))
        self.log_scale = nn.Parameter(torch.zeros(()), requires_grad=learn_scale)

    def relative_popularity(self) -> Tensor:
        return self.popularity / self.popularity.max().clamp(min=1e-12)

    def forward(self, user: UserBatch, tags: Tensor | None, cooccurrence: Tensor) -> Tensor:
        """Candidate tags ``tags`` [B, C] of each user, or every tag (None), with their
        ``cooccurrence`` score ([B, C], ``layers.CoOccurrence``): [B, C]."""
        relative = self.relative_popularity()
        if tags is None:
            freq = history_frequency(user, len(relative))
        else:
            freq, relative = candidate_frequency(user, tags), relative[tags]
        return self.log_scale.exp() * torch.log(counting_base(freq, cooccurrence, relative))


def counting_base(freq: Tensor, cooccurrence: Tensor, relative_popularity: Tensor) -> Tensor:
    """userpop's score for used tags, the back-off times cooccur's score for the others."""
    used = freq + USERPOP_BACKOFF * relative_popularity
    new = USERPOP_BACKOFF * (cooccurrence.clamp(min=0) + USERPOP_BACKOFF * relative_popularity)
    return torch.where(freq > 0, used, new).clamp(min=LOG_FLOOR)
