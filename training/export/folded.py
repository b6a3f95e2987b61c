"""The inference path with every user-independent term computed once, at export time.

``score_all`` of a trained model recomputes, for every request, things that depend on tags
only: each tag's share of the main network's first layer, the attention queries, each
mapping view f_k(X_t) and its share of the aggregator's first layer, the popularity
back-off of the counting offset. ``FoldedScorer`` precomputes those as constants ([T, ...]
tensors) so a request only pools the user's history, runs the attention, the aggregator's
user part and the remaining layers. It computes exactly the same function (checked against
``score_all`` at export).

Layout of the main network's first layer input (``MainNetwork.head``):
``[x_user (Du) | e_t (d) | attended (d) | scalars (S) | E_AGG per field (d each)]``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from training.models.ctmvm import CTMVM
from training.models.layers import TargetAware, UserBatch, history_frequency
from training.models.mlp import MainNetwork
from training.models.popularity import counting_base


class FoldedScorer(nn.Module):
    def __init__(self, model: MainNetwork) -> None:
        super().__init__()
        model = model.eval()
        enc, d = model.encoder, model.encoder.dim
        self.encoder, self.target, self.wide = enc, model.target, model.wide
        self.repeat_gate = model.repeat_gate
        self.rest = model.main[1:]
        self.fields: list[str] = list(model.fields) if isinstance(model, CTMVM) else []
        with torch.no_grad():
            tags = enc.tag.weight  # [T, d]
            first = model.main[0]
            du = enc.out_dim
            self.register_buffer("w_user", first.weight[:, :du].T.contiguous())  # [Du, H]
            self.register_buffer("tag_const", tags @ first.weight[:, du : du + d].T + first.bias)
            self.register_buffer("w_pair", first.weight[:, du + d :].T.contiguous())  # [P, H]
            bias = torch.zeros(len(tags)) if model.tag_bias is None else model.tag_bias
            self.register_buffer("tag_bias", bias.detach().clone())
            if self.target is not None:
                self.register_buffer("queries", model.target.query(tags) * model.target.scale)
                self.register_buffer("keys", tags.clone())  # [T, d]
            self.has_offset = model.offset is not None
            if self.has_offset:
                relative = model.offset.relative_popularity().detach().clone()
                self.register_buffer("relative_popularity", relative)  # [T]
                self.register_buffer("offset_scale", model.offset.log_scale.detach().exp())
            if self.fields:
                self.aggregators = nn.ModuleDict({f: model.aggregators[f] for f in self.fields})
                for field in self.fields:
                    views = model.views[field](tags)  # [T, N, d]
                    aggregator = model.aggregators[field]
                    tag_part = aggregator.tag(tags).unsqueeze(1) + aggregator.view(views)
                    self.register_buffer(f"agg_tag_{field}", tag_part)  # [T, N, h]
                    self.register_buffer(f"views_{field}", views)

    def forward(self, user: UserBatch) -> Tensor:
        x_user = self.encoder(user)  # [B, Du]
        n_tags = self.tag_const.shape[0]
        freq = history_frequency(user, n_tags)  # [B, T]
        hidden = (x_user @ self.w_user).unsqueeze(1) + self.tag_const  # [B, T, H]
        pair, scalars, matches = [], None, []
        if self.target is not None:
            hist_ids, hist_w = user["hist_tags"], user["hist_tags_w"]
            keys = self.keys[hist_ids]  # [B, L, d]
            scores = torch.einsum("td,bld->btl", self.queries, keys)
            pair.append(TargetAware.attend(scores, keys, hist_w))  # [B, T, d]
            top = hist_w.max(dim=1, keepdim=True).values.unsqueeze(-1)
            cooccurrence = self.target.cooccurrence(user, None)
            scalars = TargetAware.scalars(freq.unsqueeze(-1), top, cooccurrence.unsqueeze(-1))
            scalars = torch.cat(scalars, dim=-1)
            pair.append(scalars)
        for field in self.fields:
            aggregator = self.aggregators[field]
            user_part = aggregator.user(x_user)[:, None, None, :]  # [B, 1, 1, h]
            tag_part = getattr(self, f"agg_tag_{field}")  # [T, N, h]
            ratings = torch.softmax(
                aggregator.out(torch.tanh(user_part + tag_part)).squeeze(-1), dim=-1
            )  # [B, T, N]
            e_agg = torch.einsum("btn,tnd->btd", ratings, getattr(self, f"views_{field}"))
            pair.append(e_agg)
            history = self.encoder.history_privileged(x_user, field).unsqueeze(1)
            matches.append((e_agg * history).sum(dim=-1, keepdim=True))
        if pair:
            hidden = hidden + torch.cat(pair, dim=-1) @ self.w_pair
        logits = self.rest(hidden).squeeze(-1) + self.tag_bias
        if self.wide is not None and scalars is not None:
            logits = logits + self.wide(torch.cat([scalars, *matches], dim=-1)).squeeze(-1)
        if self.repeat_gate is not None:
            logits = torch.where(freq > 0, self.repeat_gate(x_user), logits)
        if self.has_offset:
            base = counting_base(freq, cooccurrence, self.relative_popularity)
            logits = logits + self.offset_scale * torch.log(base)
        return torch.softmax(logits, dim=-1)


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
