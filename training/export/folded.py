"""The inference path with every user-independent term computed once, at export time.

``score_all`` of a trained model recomputes, for every request, things that depend on tags
only: tag embeddings through the first layer of the main network, the attention queries,
each mapping view f_k(X_t) and its share of the aggregator's and the main network's first
layers. ``FoldedScorer`` precomputes those as constants ([T, ...] tensors) so a request only
pools the user's history, runs the attention and the small remaining layers. It computes
exactly the same function (checked against ``score_all`` at export).

Layout of the main network's first layer input (see ``MainNetwork.main_logit``):
``[x_user (Du) | e_t (d) | attended (d) | scalars (S) | E_AGG per field (d each)]``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from training.models.ctmvm import CTMVM
from training.models.layers import TargetAware, UserBatch
from training.models.mlp import MainNetwork


class FoldedScorer(nn.Module):
    def __init__(self, model: MainNetwork) -> None:
        super().__init__()
        model = model.eval()
        enc, d = model.encoder, model.encoder.dim
        self.encoder = enc
        self.target = model.target
        with torch.no_grad():
            tags = enc.tag.weight  # [T, d]
            first = model.main[0]
            w, bias = first.weight, first.bias  # [H, in]
            du, s = enc.out_dim, TargetAware.out_extra
            cuts = [du, du + d, du + 2 * d, du + 2 * d + s]
            w_user, w_tag, w_att, w_scalar = (
                w[:, :du], w[:, cuts[0] : cuts[1]], w[:, cuts[1] : cuts[2]], w[:, cuts[2] : cuts[3]]
            )  # fmt: skip
            self.register_buffer("w_user", w_user.T.contiguous())  # [Du, H]
            per_pair = [w_att, w_scalar]  # first-layer columns of user-and-tag inputs
            self.register_buffer("tag_const", tags @ w_tag.T + bias)  # [T, H]
            self.register_buffer("queries", model.target.query(tags) * model.target.scale)
            self.register_buffer("keys", tags.clone())  # [T, d]
            self.register_buffer("tag_bias", model.inference_bias().detach().clone())
            self.fields: list[str] = []
            if isinstance(model, CTMVM):
                self.fields = list(model.fields)
                offset = cuts[3]
                for i, field in enumerate(self.fields):
                    views = model.views[field](tags)  # [T, N, d]
                    aggregator = model.aggregators[field]
                    tag_part = aggregator.tag(tags).unsqueeze(1) + aggregator.view(views)
                    w_view = w[:, offset + i * d : offset + (i + 1) * d]  # [H, d]
                    self.register_buffer(f"agg_tag_{field}", tag_part)  # [T, N, h]
                    self.register_buffer(f"views_{field}", views)  # [T, N, d]
                    per_pair.append(w_view)
                self.aggregators = nn.ModuleDict(
                    {f: model.aggregators[f] for f in self.fields}
                )  # only their user and output layers run per request
            # [attended | scalars | E_AGG...] meet the first layer in one narrow matmul
            self.register_buffer("w_pair", torch.cat(per_pair, dim=1).T.contiguous())
        self.rest = model.main[1:]
        self.wide = model.wide

    def forward(self, user: UserBatch) -> Tensor:
        x_user = self.encoder(user)  # [B, Du]
        hist_ids, hist_w = user["hist_tags"], user["hist_tags_w"]
        keys = self.keys[hist_ids]  # [B, L, d]
        scores = torch.einsum("td,bld->btl", self.queries, keys)
        scores = scores.masked_fill(hist_w.unsqueeze(1) <= 0, float("-inf"))
        null = torch.zeros_like(scores[..., :1])
        attention = torch.softmax(torch.cat([null, scores], dim=-1), dim=-1)[..., 1:]
        parts = [torch.bmm(attention, keys)]  # attended history tags [B, T, d]
        freq = torch.zeros(
            hist_ids.shape[0], self.keys.shape[0], dtype=hist_w.dtype, device=hist_w.device
        ).scatter_add(1, hist_ids, hist_w)
        top = hist_w.max(dim=1, keepdim=True).values.unsqueeze(-1)
        scalars = torch.cat(self.target._scalars(freq.unsqueeze(-1), top), dim=-1)  # [B, T, S]
        parts.append(scalars)
        for field in self.fields:
            aggregator = self.aggregators[field]
            user_part = aggregator.user(x_user)[:, None, None, :]  # [B, 1, 1, h]
            tag_part = getattr(self, f"agg_tag_{field}")  # [T, N, h]
            ratings = torch.softmax(
                aggregator.out(torch.tanh(user_part + tag_part)).squeeze(-1), dim=-1
            )  # [B, T, N]
            parts.append(torch.einsum("btn,tnd->btd", ratings, getattr(self, f"views_{field}")))
        hidden = (
            torch.cat(parts, dim=-1) @ self.w_pair
            + (x_user @ self.w_user).unsqueeze(1)
            + self.tag_const
        )  # [B, T, H]: the first layer, its user-independent terms precomputed
        logits = self.rest(hidden).squeeze(-1) + self.wide(scalars).squeeze(-1) + self.tag_bias
        return torch.sigmoid(logits)


class ScoreAll(nn.Module):
    """The unfolded path: the trained model's own ``score_all`` (baseline of the benchmark)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.eval()

    def forward(self, user: UserBatch) -> Tensor:
        return self.model.score_all(user)


def inference_module(model: nn.Module, fold: bool = True) -> nn.Module:
    """The module to export: folded for MLP-based models, else ``score_all`` as is."""
    if fold and isinstance(model, MainNetwork):
        return FoldedScorer(model).eval()
    return ScoreAll(model)
