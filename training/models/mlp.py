"""``youtube`` / ``sve`` / ``youtube_plain``: the main network Φ_main(X_u, X_t) of the paper.

Every learned model answers one question, P(tag | user), and trains with the same
objective (``training.objective``): a softmax over all tags of the user's held-out tags.
Its logit is a **residual over counting**:

    logit(u, t) = s · log userpop(u, t) + { g(X_u)                                  t used by u
                                          { Φ_main(X_u, X_t, target-aware) + wide + b_t  otherwise

The split is RepeatNet's repeat/explore decomposition (Ren et al., AAAI 2019): the user's
own tags keep the counting order, and a learned per-user gate g places them as a block
against the tags new to the user, which the network ranks. Letting the network reorder the
user's own tags too (``repeat_mode: learned``) ranked them worse than their frequency on
validation users (movielens-2k, 3 splits): there is no signal in these features that beats
"the tag you used most". Φ_main's last layer, the wide part, b_t and g start at zero and s
at one, so an untrained model ranks the user's tags exactly like ``userpop`` and the rest
like ``cooccur`` (``CountingOffset``), and model selection (which scores that start as
epoch 0) never hands back anything worse on validation. ``youtube_plain`` is the paper's
YouTube baseline: X_u ⊕ X_t -> MLP, with no target-aware signal, no wide part, no
tag bias and no counting offset. ``sve`` is ``youtube`` trained on SVE-weighted targets
(the weights come with the batch, so the two differ only in the data they are given).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from training.models.layers import TargetAware, UserBatch, UserEncoder, mlp
from training.models.popularity import CountingOffset
from training.models.router import CreditRouter, routed_targets
from training.objective import listwise_loss, unlikelihood_loss


class Dims:
    """Sizes a model needs from the data set."""

    def __init__(
        self, n_tags: int, privileged_sizes: dict[str, int], attribute_sizes: list[int]
    ) -> None:
        self.n_tags = n_tags
        self.privileged_sizes = privileged_sizes
        self.attribute_sizes = attribute_sizes


def zero_(layer: nn.Linear) -> None:
    nn.init.zeros_(layer.weight)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


def linear_by_parts(first: nn.Linear, row: Tensor, tag_emb: Tensor, pair: list[Tensor]) -> Tensor:
    """``first`` applied to ``[row | tag_emb | *pair]`` without building the concatenation:
    ``row`` [B, Dr] is projected once per row, ``tag_emb`` ([B, C, d], or [T, d] shared by
    every row) once per tag, only the ``pair`` parts ([B, C, ·]) per (row, tag): -> [B, C, H]."""
    dr, d = row.shape[-1], tag_emb.shape[-1]
    weight = first.weight
    hidden = F.linear(row, weight[:, :dr], first.bias).unsqueeze(1)
    hidden = hidden + F.linear(tag_emb, weight[:, dr : dr + d])
    if pair:
        hidden = hidden + F.linear(torch.cat(pair, dim=-1), weight[:, dr + d :])
    return hidden


class MainNetwork(nn.Module):
    """Φ_main(X_u, X_t[, extra]) with the shared encoders; the base of every MLP model.

    The first layer's input is ``[X_u | X_t | target-aware | extra]``; it is applied by
    parts (``linear_by_parts``) so X_u is projected once per user and X_t once per tag instead
    of once per (user, tag) pair. ``extra`` are per-pair inputs of subclasses (E_AGG);
    ``matches`` are per-pair scalars they add to the wide part.
    """

    def __init__(self, dims: Dims, config: dict, extra_dim: int = 0, n_matches: int = 0) -> None:
        super().__init__()
        d = config["dim"]
        plain = not config.get("target_aware", True)
        self.encoder = UserEncoder(dims.n_tags, dims.privileged_sizes, dims.attribute_sizes, d)
        self.target = None if plain else TargetAware(d, dims.n_tags)
        self.tag_side_dim = d + (0 if self.target is None else self.target.out_dim)
        in_dim = self.encoder.out_dim + self.tag_side_dim + extra_dim
        self.main = mlp(
            [in_dim, *config["hidden"], 1],
            config.get("activation", "tanh"),
            config.get("dropout", 0.0),
        )
        # wide part: the target-aware scalars (and subclasses' match scalars) and a per-tag
        # bias go straight to the logit, so "the user's own tags, then popular ones" is easy
        # and the deep part learns what counting cannot (co-occurrence, privileged knowledge)
        self.wide = None if plain else nn.Linear(TargetAware.out_extra + n_matches, 1)
        with_bias = config.get("tag_bias", True) and not plain
        self.tag_bias = nn.Parameter(torch.zeros(dims.n_tags)) if with_bias else None
        use_offset = config.get("counting_offset", True) and not plain  # needs co-occurrence
        self.offset = (
            CountingOffset(dims.n_tags, config.get("learn_offset_scale", True))
            if use_offset
            else None
        )
        # repeat_mode "counting": the user's own tags keep the counting order (only a learned
        # per-user gate g(X_u) moves them as a block against the tags new to the user)
        counting_repeats = config.get("repeat_mode", "counting") == "counting"
        self.repeat_gate = (
            nn.Linear(self.encoder.out_dim, 1)
            if self.offset is not None and self.target is not None and counting_repeats
            else None
        )
        if self.offset is not None:  # an untrained model is exactly userpop
            zero_(self.main[-1])
            zero_(self.wide)
        if self.repeat_gate is not None:
            zero_(self.repeat_gate)
        self.negative_weight = float(config.get("negative_weight", 0.0))
        self.router = None
        if config.get("credit_method", "shapley") == "router":  # CAMN's learned credit
            self.router = CreditRouter(
                self.encoder.out_dim, d, 2 * d, int(config.get("router_top_q", 2))
            )
            self.router_diversity = float(config.get("router_diversity", 0.1))

    # ------------------------------------------------------------------ building blocks
    def tag_side(
        self, user: UserBatch, tags: Tensor | None
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """X_t ([B, C, d], or [T, d] for every tag), the target-aware block ([B, C, d + 4])
        and the raw co-occurrence score ([B, C]); both None for ``youtube_plain``."""
        emb = self.encoder.tag.weight if tags is None else self.encoder.tag(tags)
        if self.target is None:
            return emb, None, None
        cooccurrence = self.target.cooccurrence(user, tags)
        return emb, self.target(self.encoder.tag, user, tags, cooccurrence), cooccurrence

    def head(
        self,
        user: UserBatch,
        x_user: Tensor,
        tags: Tensor | None,
        extra: list[Tensor] | tuple[Tensor, ...] = (),
        matches: list[Tensor] | tuple[Tensor, ...] = (),
    ) -> Tensor:
        """Logits of candidate tags ``tags`` [B, C] (None: every tag) -> [B, C]."""
        tag_emb, aware, cooccurrence = self.tag_side(user, tags)
        pair = ([] if aware is None else [aware]) + list(extra)
        hidden = linear_by_parts(self.main[0], x_user, tag_emb, pair)
        logit = self.main[1:](hidden).squeeze(-1)
        if self.wide is not None and aware is not None:
            scalars = aware[..., -TargetAware.out_extra :]
            logit = logit + self.wide(torch.cat([scalars, *matches], dim=-1)).squeeze(-1)
        if self.tag_bias is not None:
            logit = logit + (self.tag_bias if tags is None else self.tag_bias[tags])
        if self.offset is None:
            return logit
        if self.repeat_gate is not None:  # the user's own tags: counting order, learned gate
            seen = TargetAware.scalar(aware, "seen") > 0
            logit = torch.where(seen, self.repeat_gate(x_user), logit)
        return logit + self.offset(user, tags, cooccurrence)

    # ------------------------------------------------------------------ the model
    def logits_all(self, user: UserBatch) -> Tensor:
        """[B, T] logits of every tag."""
        return self.head(user, self.encoder(user), None)

    def predict_loss(self, logits: Tensor, batch: dict) -> tuple[Tensor, dict[str, float]]:
        """The listwise objective on the users' held-out tags (their masses from the batch,
        or from the router), plus the unlikelihood of the tags of real item negatives when
        ``negative_weight`` > 0."""
        targets, parts = batch["targets"], {}
        diversity = None
        if self.router is not None:
            targets, diversity = routed_targets(
                self.router, self.encoder(batch["user"]), self.encoder.tag,
                batch["coalitions"], logits.shape[1],
            )  # fmt: skip
        loss = listwise_loss(logits, targets)
        parts["predict"] = float(loss.detach())
        if diversity is not None:
            loss = loss + self.router_diversity * diversity
            parts["diversity"] = float(diversity.detach())
        if self.negative_weight > 0 and batch.get("negatives") is not None:
            negative = unlikelihood_loss(logits, batch["negatives"])
            loss = loss + self.negative_weight * negative
            parts["negative"] = float(negative.detach())
        return loss, parts

    def loss(self, batch: dict) -> tuple[Tensor, dict[str, float]]:
        return self.predict_loss(self.logits_all(batch["user"]), batch)

    def score_all(self, user: UserBatch) -> Tensor:
        """P(tag | user) for every tag of every user of the batch: [B, T], rows sum to 1."""
        return torch.softmax(self.logits_all(user), dim=-1)
