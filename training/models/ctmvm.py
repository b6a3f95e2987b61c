"""``ctmvm`` (SVE + AMVM) and ``sve_pkm`` (SVE + one mapping network): DESIGN §2.

Per privileged field (genre, director, ...), N knowledge mapping networks f_k(X_t)
(Linear -> tanh -> Linear) map a tag embedding to substitutes of the target item's
privileged embedding X_p, which exists at training time only. The aggregator
g(X_u, X_t, f_k(X_t)) rates the N views; E_AGG = Σ softmax(r)_k f_k(X_t) feeds the main
network. The supplementary network Φ_supp(X_u, X_t, X_p) learns X_p with the real
privileged input, and the view closest to stop_grad(X_p) is pulled towards it:

    L = L_predict(Φ_main(., E_AGG)) + L_aux(Φ_main(., f_selected)) + L_supp(Φ_supp)
        + ρ · MSE(stop_grad(X_p), f_selected)

Every term is weighted per sample by the SVE weight. At inference only Φ_main, the f_k and g
run, all from user features: nothing needs X_p. PKM is the N = 1 case (g is then constant).
Rows without a privileged value (random tag negatives, items lacking the field) fall back to
E_AGG in L_aux and are left out of the mapping loss.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from training.models.layers import UserBatch, mlp
from training.models.mlp import Dims, MainNetwork, weighted_bce


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
    """g(X_u, X_t, f_k(X_t)) -> rating r'_k; the first layer is split by input so the
    user-independent parts (X_t, f_k) can be computed once for all tags."""

    def __init__(self, user_dim: int, dim: int, hidden: int) -> None:
        super().__init__()
        self.user = nn.Linear(user_dim, hidden)
        self.tag = nn.Linear(dim, hidden, bias=False)
        self.view = nn.Linear(dim, hidden, bias=False)
        self.out = nn.Linear(hidden, 1)

    def forward(self, x_user: Tensor, tag_emb: Tensor, views: Tensor) -> Tensor:
        """x_user [..., Du], tag_emb [..., d], views [..., N, d] -> softmax ratings [..., N]."""
        hidden = (self.user(x_user) + self.tag(tag_emb)).unsqueeze(-2) + self.view(views)
        return torch.softmax(self.out(torch.tanh(hidden)).squeeze(-1), dim=-1)


class CTMVM(MainNetwork):
    def __init__(self, dims: Dims, config: dict) -> None:
        d = config["dim"]
        self.fields = [f for f, size in dims.privileged_sizes.items() if size > 0]
        super().__init__(dims, config, extra_dim=d * len(self.fields))
        self.rho = config["rho"]
        n_views, hidden = config["n_views"], config.get("mapping_hidden", 2 * d)
        self.views = nn.ModuleDict({f: MappingViews(n_views, d, hidden) for f in self.fields})
        self.aggregators = nn.ModuleDict(
            {
                f: Aggregator(self.encoder.out_dim, d, config.get("aggregator_hidden", 2 * d))
                for f in self.fields
            }
        )
        supp_in = self.encoder.out_dim + self.tag_side_dim + d * len(self.fields)
        self.supplementary = mlp(
            [supp_in, *config["hidden"], 1],
            config.get("activation", "tanh"),
            config.get("dropout", 0.0),
        )

    def loss(self, batch: dict) -> tuple[Tensor, dict[str, float]]:
        user, tags = batch["user"], batch["tag"]
        label, weight = batch["label"], batch["weight"]
        x_user = self.encoder(user)
        tag_emb = self.encoder.tag(tags)
        tag_side = self.tag_side_rows(user, tags)
        aggregated, selected, privileged = [], [], []
        mapping = torch.zeros((), device=x_user.device)
        for field in self.fields:
            ids, w = batch["item_privileged"][field]
            x_p = self.encoder.item_privileged(field, ids, w)  # [B, d]
            has_p = w.sum(dim=-1) > 0
            views = self.views[field](tag_emb)  # [B, N, d]
            ratings = self.aggregators[field](x_user, tag_emb, views)
            e_agg = (ratings.unsqueeze(-1) * views).sum(dim=-2)
            target = x_p.detach()  # stop-gradient: the mapping never moves X_p
            distance = ((views - target.unsqueeze(1)) ** 2).mean(dim=-1)  # [B, N]
            closest = distance.argmin(dim=-1)
            f_sel = views[torch.arange(len(tags), device=tags.device), closest]
            mse = ((f_sel - target) ** 2).mean(dim=-1)
            mapping = mapping + (weight * mse * has_p).sum() / has_p.sum().clamp(min=1)
            aggregated.append(e_agg)
            selected.append(torch.where(has_p.unsqueeze(-1), f_sel, e_agg))
            privileged.append(x_p)
        bias = self.tag_bias[tags]
        predict = weighted_bce(self.main_logit(x_user, tag_side, bias, *aggregated), label, weight)
        aux = weighted_bce(self.main_logit(x_user, tag_side, bias, *selected), label, weight)
        supp_logit = self.supplementary(torch.cat([x_user, tag_side, *privileged], dim=-1))
        supp = weighted_bce(supp_logit.squeeze(-1), label, weight)
        loss = predict + aux + supp + self.rho * mapping
        parts = {
            "predict": float(predict.detach()),
            "aux": float(aux.detach()),
            "supp": float(supp.detach()),
            "amvm": float(mapping.detach()),
        }
        return loss, parts

    def score_all(self, user: UserBatch) -> Tensor:
        x_user = self.encoder(user)
        tag_emb = self.encoder.tag.weight  # [T, d]
        extra = []
        for field in self.fields:
            views = self.views[field](tag_emb)  # [T, N, d]: user independent
            ratings = self.aggregators[field](
                x_user.unsqueeze(1), tag_emb.unsqueeze(0), views.unsqueeze(0)
            )  # [B, T, N]
            extra.append(torch.einsum("btn,tnd->btd", ratings, views))
        logits = self.main_logit(x_user, self.tag_side_all(user), self.inference_bias(), *extra)
        return torch.sigmoid(logits)
