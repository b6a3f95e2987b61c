"""Building blocks shared by every neural model.

All models see the same inputs (a fair comparison): the user encoder pools the history bags
into X_u, and the target-aware block gives each (user, tag) pair the target tag's
normalised history frequency plus attention of the target tag over the history tags, so a
model can learn "this user keeps using this exact tag" instead of hoping a mean-pooled user
vector reproduces it. Everything is computed from user features alone, for a few candidate
tags per user (training) or for all tags at once (training, evaluation, export).
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor, nn

UserBatch = dict[str, Tensor]
"""``hist_tags``/``hist_tags_w`` [B, L], ``hist_<field>``/``hist_<field>_w`` [B, Lf] and
``attributes`` [B, A] (value + 1, 0 = unknown): the ONNX input names as well."""

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}
COOCCURRENCE_FLOOR = 1e-4
"""Added before the log of a co-occurrence score, which is 0 for tags nobody co-used."""


def mlp(sizes: list[int], activation: str = "tanh", dropout: float = 0.0) -> nn.Sequential:
    """Linear layers with ``activation`` (and dropout) between them, none after the last."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def pool(embedding: nn.Embedding, ids: Tensor, weights: Tensor) -> Tensor:
    """Weighted sum of embeddings of a padded bag (weights are 0 on padding)."""
    return (embedding(ids) * weights.unsqueeze(-1)).sum(dim=-2)


def history_frequency(user: UserBatch, n_tags: int) -> Tensor:
    """[B, T] each tag's normalised frequency in the user's history bag (0 if unused)."""
    ids, weights = user["hist_tags"], user["hist_tags_w"]
    freq = torch.zeros(ids.shape[0], n_tags, dtype=weights.dtype, device=weights.device)
    return freq.scatter_add(1, ids, weights)


def candidate_frequency(user: UserBatch, tags: Tensor) -> Tensor:
    """[B, C] the normalised history frequency of candidate tags ``tags`` [B, C]."""
    ids, weights = user["hist_tags"], user["hist_tags_w"]
    same = ids.unsqueeze(1) == tags.unsqueeze(-1)  # [B, C, L]
    return (same * weights.unsqueeze(1)).sum(dim=-1)


class UserEncoder(nn.Module):
    """X_u: pooled history tags, pooled history privileged values per field, attributes."""

    def __init__(
        self,
        n_tags: int,
        privileged_sizes: dict[str, int],
        attribute_sizes: list[int],
        dim: int,
    ) -> None:
        super().__init__()
        self.fields = list(privileged_sizes)
        self.tag = nn.Embedding(n_tags, dim)
        self.privileged = nn.ModuleDict(
            {f: nn.Embedding(max(size, 1), dim) for f, size in privileged_sizes.items()}
        )
        self.attributes = nn.ModuleList(nn.Embedding(size, dim) for size in attribute_sizes)
        for table in (self.tag, *self.privileged.values(), *self.attributes):
            nn.init.normal_(table.weight, std=0.1)
        self.dim = dim
        self.out_dim = dim * (1 + len(self.fields) + len(attribute_sizes))

    def forward(self, user: UserBatch) -> Tensor:
        parts = [pool(self.tag, user["hist_tags"], user["hist_tags_w"])]
        for field in self.fields:
            parts.append(
                pool(self.privileged[field], user[f"hist_{field}"], user[f"hist_{field}_w"])
            )
        for a, table in enumerate(self.attributes):
            parts.append(table(user["attributes"][:, a]))
        return torch.cat(parts, dim=-1)

    def item_privileged(self, field: str, ids: Tensor, weights: Tensor) -> Tensor:
        """X_p of target items for one field (zero for items without a value)."""
        return pool(self.privileged[field], ids, weights)

    def history_privileged(self, x_user: Tensor, field: str) -> Tensor:
        """The pooled history values of ``field``: their slice of X_u ([B, d])."""
        start = self.dim * (1 + self.fields.index(field))
        return x_user[..., start : start + self.dim]


class CoOccurrence(nn.Module):
    """Σ_h w_u(h)·P(t | h): how likely users of the user's history tags use tag t.

    ``counts`` [T, T] (a buffer the trainer fills, ``features.tag_cooccurrence_counts``) holds
    how many train users used both h and t; the diagonal, how many used h. P(t | h) =
    counts[h, t] / counts[h, h]. A train user is part of those counts, so a batch may carry
    ``counted_tags`` ([B, T], 1 for the tags the user contributed) and the user's own
    contribution is left out (leave-one-user-out); otherwise a rare target tag would look
    predictable because this very user used it.
    """

    def __init__(self, n_tags: int) -> None:
        super().__init__()
        self.register_buffer("counts", torch.zeros(n_tags, n_tags))

    def forward(self, user: UserBatch, tags: Tensor | None) -> Tensor:
        """Candidate tags ``tags`` [B, C] of each user, or every tag (None): [B, C]."""
        ids, weights = user["hist_tags"], user["hist_tags_w"]
        users_of = torch.diagonal(self.counts)[ids]  # [B, L]
        own = user.get("counted_tags")
        own_h = torch.zeros_like(weights) if own is None else own.gather(1, ids)
        share = weights / (users_of - own_h).clamp(min=1.0)  # w_u(h) / users of h
        if tags is None:
            spread = torch.zeros(
                ids.shape[0], self.counts.shape[0], dtype=share.dtype, device=share.device
            ).scatter_add(1, ids, share)
            score = spread @ self.counts  # [B, T]
            own_t = own
        else:
            pairs = self.counts[ids.unsqueeze(-1), tags.unsqueeze(1)]  # [B, L, C]
            score = (share.unsqueeze(-1) * pairs).sum(dim=1)
            own_t = None if own is None else own.gather(1, tags)
        if own is not None:  # minus the user's own co-use of (h, t)
            score = score - (share * own_h).sum(dim=1, keepdim=True) * own_t
        return score


class TargetAware(nn.Module):
    """Per (user, target tag): [attention-pooled history tags (d), frequency, frequency
    relative to the user's most frequent tag, seen-before, log co-occurrence].

    The relative frequency matters: normalised frequencies are not comparable across users
    (a user with one history tag has frequency 1), while "this is the user's top tag" is.
    The co-occurrence (``CoOccurrence``, counted on the train users) is what a practitioner
    would count for tags the user never used; the attention can learn finer relations.

    The attention has a learned null slot, so a user without history (or with nothing
    related) attends to "nothing" rather than producing NaNs.
    """

    SCALARS = ("frequency", "relative", "seen", "log_cooccurrence")
    out_extra = len(SCALARS)

    def __init__(self, dim: int, n_tags: int) -> None:
        super().__init__()
        self.query = nn.Linear(dim, dim, bias=False)
        self.scale = 1.0 / math.sqrt(dim)
        self.out_dim = dim + self.out_extra
        self.cooccurrence = CoOccurrence(n_tags)

    def forward(
        self,
        tag_emb: nn.Embedding,
        user: UserBatch,
        tags: Tensor | None,
        cooccurrence: Tensor | None = None,
    ) -> Tensor:
        """Candidate tags ``tags`` [B, C] of each user, or every tag (None, C = T):
        -> [B, C, d + 4]; ``cooccurrence`` ([B, C]) when the caller computed it already."""
        hist_ids, hist_w = user["hist_tags"], user["hist_tags_w"]
        keys = tag_emb(hist_ids)  # [B, L, d]
        if tags is None:
            query = self.query(tag_emb.weight)  # [T, d]: shared by every user
            scores = torch.einsum("td,bld->btl", query, keys)
            freq = history_frequency(user, tag_emb.num_embeddings)
        else:
            query = self.query(tag_emb(tags))  # [B, C, d]
            scores = torch.einsum("bcd,bld->bcl", query, keys)
            freq = candidate_frequency(user, tags)
        attended = self.attend(scores * self.scale, keys, hist_w)  # [B, C, d]
        top = hist_w.max(dim=1, keepdim=True).values.unsqueeze(-1)  # [B, 1, 1]
        if cooccurrence is None:
            cooccurrence = self.cooccurrence(user, tags)
        scalars = self.scalars(freq.unsqueeze(-1), top, cooccurrence.unsqueeze(-1))
        return torch.cat([attended, *scalars], dim=-1)

    @classmethod
    def scalar(cls, aware: Tensor, name: str) -> Tensor:
        """One of the ``SCALARS`` of a target-aware block [..., d + 4] -> [...]."""
        return aware[..., cls.SCALARS.index(name) - cls.out_extra]

    @staticmethod
    def scalars(freq: Tensor, top: Tensor, cooccurrence: Tensor) -> tuple[Tensor, ...]:
        relative = freq / top.clamp(min=1e-12)
        seen = (freq > 0).to(freq.dtype)
        return freq, relative, seen, torch.log(cooccurrence.clamp(min=0) + COOCCURRENCE_FLOOR)

    @staticmethod
    def attend(scores: Tensor, keys: Tensor, weights: Tensor) -> Tensor:
        """[B, C, L] scores over history slots [B, L, d] (weights [B, L]) plus a null slot
        of score 0 and value 0 -> [B, C, d]."""
        scores = scores.masked_fill(weights.unsqueeze(1) <= 0, float("-inf"))
        null = torch.zeros_like(scores[..., :1])
        attention = torch.softmax(torch.cat([null, scores], dim=-1), dim=-1)[..., 1:]
        return torch.bmm(attention, keys)
