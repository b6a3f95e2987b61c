"""``ctmvm`` (SVE + AMVM) and ``sve_pkm`` (SVE + one mapping network): DESIGN §2.

Per privileged field (genre, director, ...), N knowledge mapping networks f_k(X_t)
(Linear -> tanh -> Linear) map a tag embedding to substitutes of the target item's
privileged embedding X_p, which exists at training time only. The aggregator
g(X_u, X_t, f_k(X_t)) rates the N views; E_AGG = Σ softmax(r)_k f_k(X_t) feeds the main
network, and ⟨E_AGG, pooled history X_p⟩ ("does this tag's typical genre match the user's
genres") feeds its wide part. At inference only Φ_main, the f_k and g run, all from user
features: nothing needs X_p.

Training (``training.objective``):

    L = L_predict(Φ_main(., E_AGG), all tags) + L_aux(Φ_main(., f_selected))
        + L_supp(Φ_supp(., X_p)) + ρ · MSE(stop_grad(X_p), f_selected) [+ λ_d · T² · KL]

L_predict is the listwise softmax of every model. The privileged terms are computed on the
held-out interactions (u, v) of the batch's users: each held-out tag of v competes with K
tags drawn for the same v, and *all of them carry v's X_p*, so "this tag goes with these
privileged values" is what separates positives from negatives (with negatives lacking an
item, as before, X_p never predicted the label and AMVM had nothing to distil).

- f_selected is the view closest (MSE) to stop_grad(X_p) (``aux_view: hard``, the paper) or
  the views averaged by TiMiRec's soft target softmax(−distance / T) (``aux_view: soft``).
- TiMiRec's target-interest distillation (``distill_weight`` > 0): the soft target over the
  N views, from their compatibility with the target's X_p, is distilled into g's ratings by
  a stop-gradient KL term weighted T², so g learns from user features which view a target
  will need.
- Rows without a privileged value (items lacking the field) fall back to E_AGG in L_aux
  and are left out of the mapping and distillation terms. PKM is N = 1 (g is constant).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from training.models.layers import UserBatch, mlp
from training.models.mlp import Dims, MainNetwork, linear_by_parts
from training.objective import sampled_softmax_loss


class MappingViews(nn.Module):
    """N mapping networks f_k: R^d -> R^d (Linear -> tanh -> Linear), evaluated together."""

    def __init__(self, n_views: int, dim: int, hidden: int) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(n_views, dim, hidden) * (1.0 / dim**0.5))
        self.b1 = nn.Parameter(torch.zeros(n_views, hidden))
        self.w2 = nn.Parameter(torch.randn(n_views, hidden, dim) * (1.0 / hidden**0.5))
        self.b2 = nn.Parameter(torch.zeros(n_views, dim))

    def forward(self, tag_emb: Tensor) -> Tensor:
        """[..., d] -> [..., N, d]."""
        hidden = torch.tanh(torch.einsum("...d,ndh->...nh", tag_emb, self.w1) + self.b1)
        return torch.einsum("...nh,nhd->...nd", hidden, self.w2) + self.b2


class Aggregator(nn.Module):
    """g(X_u, X_t, f_k(X_t)) -> log softmax ratings over the N views; the first layer is
    split by input so the user-independent parts (X_t, f_k) can be computed once per tag."""

    def __init__(self, user_dim: int, dim: int, hidden: int) -> None:
        super().__init__()
        self.user = nn.Linear(user_dim, hidden)
        self.tag = nn.Linear(dim, hidden, bias=False)
        self.view = nn.Linear(dim, hidden, bias=False)
        self.out = nn.Linear(hidden, 1)

    def forward(self, x_user: Tensor, tag_emb: Tensor, views: Tensor) -> Tensor:
        """x_user [B, Du]; tag_emb [B, C, d] or [T, d]; views [B, C, N, d] or [T, N, d]
        -> log ratings [B, C, N]."""
        hidden = self.user(x_user)[:, None, None, :] + (
            self.tag(tag_emb).unsqueeze(-2) + self.view(views)
        )
        return torch.log_softmax(self.out(torch.tanh(hidden)).squeeze(-1), dim=-1)


class CTMVM(MainNetwork):
    def __init__(self, dims: Dims, config: dict) -> None:
        d = config["dim"]
        fields = [f for f, size in dims.privileged_sizes.items() if size > 0]
        super().__init__(dims, config, extra_dim=d * len(fields), n_matches=len(fields))
        self.fields = fields
        self.rho = config["rho"]
        self.aux_view = config.get("aux_view", "hard")
        if self.aux_view not in ("hard", "soft"):
            raise ValueError(f"aux_view must be 'hard' or 'soft', got {self.aux_view!r}")
        self.distill_weight = float(config.get("distill_weight", 0.0))
        self.temperature = float(config.get("distill_temperature", 1.0))
        n_views, hidden = config["n_views"], config.get("mapping_hidden", 2 * d)
        self.views = nn.ModuleDict({f: MappingViews(n_views, d, hidden) for f in fields})
        self.aggregators = nn.ModuleDict(
            {
                f: Aggregator(self.encoder.out_dim, d, config.get("aggregator_hidden", 2 * d))
                for f in fields
            }
        )
        supp_in = self.encoder.out_dim + d * len(fields) + self.tag_side_dim
        self.supplementary = mlp(
            [supp_in, *config["hidden"], 1],
            config.get("activation", "tanh"),
            config.get("dropout", 0.0),
        )
        # the teacher learns P(tag | X_u, X_p) on its own: with the counting offset, random
        # negatives are beaten by the offset alone and X_p gets no gradient worth having
        self.supplementary_offset = bool(config.get("supplementary_offset", False))
        # ⟨X_p, U_f X_t⟩ per field: "this tag goes with these privileged values" in one
        # product, which a tanh MLP over the concatenation learns only slowly
        self.supplementary_match = nn.ModuleDict({f: nn.Linear(d, d, bias=False) for f in fields})
        self.item_tag_bias = nn.Parameter(torch.zeros(dims.n_tags))
        self.item_tag_weight = float(config.get("item_tag_weight", 1.0))

    # ------------------------------------------------------------------ inference path
    def aggregate(
        self, x_user: Tensor, tag_emb: Tensor
    ) -> tuple[list[Tensor], list[Tensor], list[tuple[Tensor, Tensor]]]:
        """Per field: E_AGG [B, C, d], its match with the user's history values [B, C, 1],
        and (views, log ratings) for the training terms."""
        extra, matches, parts = [], [], []
        for field in self.fields:
            views = self.views[field](tag_emb)
            log_ratings = self.aggregators[field](x_user, tag_emb, views)  # [B, C, N]
            e_agg = (log_ratings.exp().unsqueeze(-1) * views).sum(dim=-2)  # [B, C, d]
            extra.append(e_agg)
            matches.append(self.match(x_user, field, e_agg))
            parts.append((views, log_ratings))
        return extra, matches, parts

    def match(self, x_user: Tensor, field: str, substitute: Tensor) -> Tensor:
        """⟨substitute X_p of the tag, the user's pooled history X_p⟩: [B, C, 1]."""
        history = self.encoder.history_privileged(x_user, field).unsqueeze(1)  # [B, 1, d]
        return (substitute * history).sum(dim=-1, keepdim=True)

    def logits_all(self, user: UserBatch) -> Tensor:
        x_user = self.encoder(user)
        extra, matches, _ = self.aggregate(x_user, self.encoder.tag.weight)
        return self.head(user, x_user, None, extra, matches)

    # ------------------------------------------------------------------ training
    def loss(self, batch: dict) -> tuple[Tensor, dict[str, float]]:
        loss, parts = self.predict_loss(self.logits_all(batch["user"]), batch)
        rows = batch.get("rows")
        if rows is not None and rows["tags"].shape[0] > 0:
            privileged, more = self.privileged_loss(rows)
            loss = loss + privileged
            parts.update(more)
        pairs = batch.get("item_tags")
        if pairs is not None and pairs["tags"].shape[0] > 0 and self.item_tag_weight > 0:
            item_tag = self.item_tag_loss(pairs)
            loss = loss + self.item_tag_weight * item_tag
            parts["item_tag"] = float(item_tag.detach())
        return loss, parts

    def privileged_match(self, tag_emb: Tensor, privileged: list[Tensor]) -> Tensor:
        """Σ_f ⟨X_p,f, U_f X_t⟩: [B, C] for tag_emb [B, C, d] or [T, d] and X_p [B, d]."""
        total = torch.zeros((), device=tag_emb.device)
        for field, x_p in zip(self.fields, privileged, strict=True):
            mapped = self.supplementary_match[field](tag_emb)
            total = total + (mapped * x_p.unsqueeze(1)).sum(dim=-1)
        return total

    def item_tag_loss(self, pairs: dict) -> Tensor:
        """P(tag | X_p) over the train users' (item, tag) pairs, history included: the
        sampled softmax of ⟨X_p, U X_t⟩ + b_t. It shapes the X_p and tag embeddings that
        Φ_supp, the mapping views and the history pooling share."""
        tags = pairs["tags"]
        privileged = [
            self.encoder.item_privileged(f, *pairs["item_privileged"][f]) for f in self.fields
        ]
        logits = self.privileged_match(self.encoder.tag(tags), privileged)
        logits = logits + self.item_tag_bias[tags] - pairs["log_q"]
        return sampled_softmax_loss(
            logits[:, :1], logits[:, 1:], pairs["weights"], pairs["negative_mask"]
        )

    def privileged_loss(self, rows: dict) -> tuple[Tensor, dict[str, float]]:
        """L_aux + L_supp + ρ·mapping (+ distillation) on held-out interactions, each with
        its positives and K negatives that keep the interaction's item (module docstring).

        ``rows``: ``user`` (features per interaction), ``item_privileged`` {field: (ids,
        weights)}, ``tags`` [R, P + K] (positives first) with ``log_q`` (the log proposal
        probability of each, subtracted from the logits), ``weights`` [R, P] (0 on
        padding), ``negative_mask`` [R, K]."""
        user, tags, weights = rows["user"], rows["tags"], rows["weights"]
        n_pos = weights.shape[1]
        x_user = self.encoder(user)
        tag_emb = self.encoder.tag(tags)  # [R, C, d]
        selected, matches, privileged = [], [], []
        mapping = distill = torch.zeros((), device=x_user.device)
        for field in self.fields:
            ids, w = rows["item_privileged"][field]
            x_p = self.encoder.item_privileged(field, ids, w)  # [R, d]
            privileged.append(x_p)
            target = x_p.detach()[:, None, None, :]  # stop-gradient: the mapping never moves X_p
            views = self.views[field](tag_emb)  # [R, C, N, d]
            distance = ((views - target) ** 2).mean(dim=-1)  # [R, C, N]
            soft = torch.softmax(-distance.detach() / self.temperature, dim=-1)
            if self.aux_view == "hard":
                closest = distance.argmin(dim=-1, keepdim=True)  # [R, C, 1]
                chosen = torch.gather(
                    views, 2, closest.unsqueeze(-1).expand(-1, -1, 1, views.shape[-1])
                )
                f_sel = chosen.squeeze(2)
            else:
                f_sel = (soft.unsqueeze(-1) * views).sum(dim=-2)
            log_ratings = self.aggregators[field](x_user, tag_emb, views)
            has_p = (w.sum(dim=-1) > 0)[:, None, None]  # [R, 1, 1]
            e_agg = (log_ratings.exp().unsqueeze(-1) * views).sum(dim=-2)
            f_use = torch.where(has_p, f_sel, e_agg)
            selected.append(f_use)
            matches.append(self.match(x_user, field, f_use))
            known = weights * has_p[:, :, 0]  # positives whose item has this field
            mse = ((f_sel[:, :n_pos] - target[:, :, 0]) ** 2).mean(dim=-1)
            mapping = mapping + (known * mse).sum() / known.sum().clamp(min=1e-12)
            if self.distill_weight > 0:
                q = soft[:, :n_pos]
                kl = (q * (torch.log(q.clamp(min=1e-12)) - log_ratings[:, :n_pos])).sum(-1)
                distill = distill + (known * kl).sum() / known.sum().clamp(min=1e-12)
        mask, log_q = rows["negative_mask"], rows["log_q"]
        aux_logits = self.head(user, x_user, tags, selected, matches) - log_q
        aux = sampled_softmax_loss(aux_logits[:, :n_pos], aux_logits[:, n_pos:], weights, mask)
        supp_logits = self.supplementary_logits(user, x_user, tags, privileged) - log_q
        supp = sampled_softmax_loss(supp_logits[:, :n_pos], supp_logits[:, n_pos:], weights, mask)
        distill = distill * self.temperature**2
        loss = aux + supp + self.rho * mapping + self.distill_weight * distill
        parts = {
            "aux": float(aux.detach()),
            "supp": float(supp.detach()),
            "amvm": float(mapping.detach()),
        }
        if self.distill_weight > 0:
            parts["distill"] = float(distill.detach())
        return loss, parts

    def supplementary_logits(
        self, user: UserBatch, x_user: Tensor, tags: Tensor, privileged: list[Tensor]
    ) -> Tensor:
        """Φ_supp(X_u, X_p, X_t, target-aware) + counting offset: [R, C]. X_p belongs to
        the interaction, so it joins X_u in the part of the first layer shared by its
        candidates."""
        return self._supplementary(user, x_user, tags, privileged)

    def _supplementary(
        self, user: UserBatch, x_user: Tensor, tags: Tensor | None, privileged: list[Tensor]
    ) -> Tensor:
        tag_emb, aware, cooccurrence = self.tag_side(user, tags)
        pair = [] if aware is None else [aware]
        row = torch.cat([x_user, *privileged], dim=-1)
        hidden = linear_by_parts(self.supplementary[0], row, tag_emb, pair)
        logit = self.supplementary[1:](hidden).squeeze(-1)
        logit = logit + self.privileged_match(tag_emb, privileged)
        if self.offset is not None and self.supplementary_offset:
            logit = logit + self.offset(user, tags, cooccurrence)
        return logit

    def supplementary_all(self, user: UserBatch, privileged: list[Tensor]) -> Tensor:
        """Φ_supp logits of every tag given per-user X_p ([B, d] per field): [B, T]. Used by
        ``diagnose`` to ask what the privileged input is worth."""
        return self._supplementary(user, self.encoder(user), None, privileged)
