"""Building blocks shared by every neural model.

All models see the same inputs (a fair comparison): the user encoder pools the history bags
into X_u, and the target-aware block gives each (user, tag) pair the target tag's
normalised history frequency plus attention of the target tag over the history tags, so a
model can learn "this user keeps using this exact tag" instead of hoping a mean-pooled user
vector reproduces it. Everything is computed from user features alone, for one target tag
per row (training) or for all tags at once (evaluation, export).
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


class TargetAware(nn.Module):
    """Per (user, target tag): [attention-pooled history tags (d), frequency, frequency
    relative to the user's most frequent tag, seen-before].

    The relative frequency matters: normalised frequencies are not comparable across users
    (a user with one history tag has frequency 1), while "this is the user's top tag" is.

    The attention has a learned null slot, so a user without history (or with nothing
    related) attends to "nothing" rather than producing NaNs.
    """

    out_extra = 3

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.query = nn.Linear(dim, dim, bias=False)
        self.scale = 1.0 / math.sqrt(dim)
        self.out_dim = dim + self.out_extra

    def rows(self, tag_emb: nn.Embedding, user: UserBatch, tags: Tensor) -> Tensor:
        """One target tag per row: ``tags`` [B] -> [B, d + 2]."""
        hist_ids, hist_w = user["hist_tags"], user["hist_tags_w"]
        keys = tag_emb(hist_ids)  # [B, L, d]
        query = self.query(tag_emb(tags))  # [B, d]
        scores = torch.einsum("bd,bld->bl", query, keys) * self.scale
        attended = self._attend(scores, keys, hist_w)  # [B, d]
        freq = ((hist_ids == tags.unsqueeze(1)) * hist_w).sum(dim=1, keepdim=True)
        top = hist_w.max(dim=1, keepdim=True).values
        return torch.cat([attended, *self._scalars(freq, top)], dim=-1)

    def all_tags(self, tag_emb: nn.Embedding, user: UserBatch) -> Tensor:
        """Every tag as the target: -> [B, T, d + 2]."""
        hist_ids, hist_w = user["hist_tags"], user["hist_tags_w"]
        keys = tag_emb(hist_ids)  # [B, L, d]
        query = self.query(tag_emb.weight)  # [T, d]
        scores = torch.einsum("td,bld->btl", query, keys) * self.scale
        attended = self._attend(scores, keys, hist_w.unsqueeze(1))  # [B, T, d]
        freq = torch.zeros(
            hist_ids.shape[0], tag_emb.num_embeddings, dtype=hist_w.dtype, device=hist_w.device
        ).scatter_add(1, hist_ids, hist_w)
        top = hist_w.max(dim=1, keepdim=True).values.unsqueeze(-1)  # [B, 1, 1]
        return torch.cat([attended, *self._scalars(freq.unsqueeze(-1), top)], dim=-1)

    @staticmethod
    def _scalars(freq: Tensor, top: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        relative = freq / top.clamp(min=1e-12)
        return freq, relative, (freq > 0).to(freq.dtype)

    @staticmethod
    def _attend(scores: Tensor, keys: Tensor, weights: Tensor) -> Tensor:
        """Softmax over history slots plus a null slot of score 0 and value 0."""
        scores = scores.masked_fill(weights <= 0, float("-inf"))
        null = torch.zeros_like(scores[..., :1])
        attention = torch.softmax(torch.cat([null, scores], dim=-1), dim=-1)[..., 1:]
        if scores.dim() == 3:  # [B, T, L] x [B, L, d]
            return torch.bmm(attention, keys)
        return torch.einsum("bl,bld->bd", attention, keys)
