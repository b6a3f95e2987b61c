"""``utpm``: the UTPM baseline (Tencent, CIKM'20), adapted to our inputs.

- Attention fusion with shared query vectors: for head h, every feature i of field k gets
  the score q_h · relu(W_{k,h} t_i + b_{k,h}); features are merged within each field by a
  softmax over these scores (plus log of the feature's history weight, so a frequent tag
  counts more), then fields are merged by the same query q_h. Two heads.
- FM-style cross layer: the merged head embeddings are treated as scalar features with
  latent vectors; all pairwise crossed values (0.5·((Σ x v)² − Σ x² v²)) are fed with the
  linear values to a dense layer that outputs the user embedding u.
- Prediction: u · e_t + b_t, plus the shared target-aware signal through a linear layer,
  plus the counting offset of every learned model (``CountingOffset``; u, b_t and that
  layer start at zero, so an untrained UTPM ranks like ``userpop``).
- Loss: the shared listwise softmax over all tags (``training.objective``). The paper's joint
  loss (one click logit per interaction from the summed tag scores) belongs to pointwise
  click training and is not kept.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from training.models.layers import TargetAware, UserBatch, UserEncoder
from training.models.mlp import Dims, zero_
from training.models.popularity import CountingOffset
from training.objective import listwise_loss


class UTPM(nn.Module):
    def __init__(self, dims: Dims, config: dict) -> None:
        super().__init__()
        d = config["dim"]
        heads, q_dim = config.get("heads", 2), config.get("query_dim", 8)
        cross_dim = config.get("cross_dim", 8)
        self.encoder = UserEncoder(dims.n_tags, dims.privileged_sizes, dims.attribute_sizes, d)
        self.fields = ["tags", *self.encoder.fields]
        n_fields = len(self.fields) + len(dims.attribute_sizes)
        self.queries = nn.Parameter(torch.randn(heads, q_dim) * 0.1)
        self.within = nn.ModuleList(
            nn.ModuleList(nn.Linear(d, q_dim) for _ in range(n_fields)) for _ in range(heads)
        )
        self.across = nn.ModuleList(nn.Linear(d, q_dim) for _ in range(heads))
        self.latent = nn.Parameter(torch.randn(heads * d, cross_dim) * 0.1)
        self.dense = nn.Sequential(
            nn.Linear(heads * d + cross_dim, config["hidden"][0]),
            nn.ReLU(),
            nn.Linear(config["hidden"][0], d),
        )
        self.tag_bias = nn.Parameter(torch.zeros(dims.n_tags))
        self.target = TargetAware(d, dims.n_tags)
        self.target_out = nn.Linear(self.target.out_dim, 1)
        self.offset = CountingOffset(dims.n_tags, config.get("learn_offset_scale", True))
        zero_(self.dense[-1])
        zero_(self.target_out)

    def _field_bags(self, user: UserBatch) -> list[tuple[Tensor, Tensor]]:
        """(embeddings [B, L, d], weights [B, L]) of every field; attributes are 1-bags."""
        bags = [(self.encoder.tag(user["hist_tags"]), user["hist_tags_w"])]
        for field in self.encoder.fields:
            table = self.encoder.privileged[field]
            bags.append((table(user[f"hist_{field}"]), user[f"hist_{field}_w"]))
        for a, table in enumerate(self.encoder.attributes):
            ids = user["attributes"][:, a : a + 1]
            bags.append((table(ids), (ids > 0).to(torch.float32)))
        return bags

    def user_embedding(self, user: UserBatch) -> Tensor:
        bags = self._field_bags(user)
        merged = []
        for h, query in enumerate(self.queries):
            fields = []
            for k, (emb, w) in enumerate(bags):
                score = F.relu(self.within[h][k](emb)) @ query  # [B, L]
                score = score + torch.log(w.clamp(min=1e-12))
                score = score.masked_fill(w <= 0, float("-inf"))
                null = torch.zeros_like(score[:, :1])
                alpha = torch.softmax(torch.cat([null, score], dim=1), dim=1)[:, 1:]
                fields.append(torch.einsum("bl,bld->bd", alpha, emb))
            stacked = torch.stack(fields, dim=1)  # [B, K, d]
            beta = torch.softmax(F.relu(self.across[h](stacked)) @ query, dim=1)  # [B, K]
            merged.append(torch.einsum("bk,bkd->bd", beta, stacked))
        x = torch.cat(merged, dim=-1)  # [B, H*d] scalar features for the cross layer
        xv = x @ self.latent
        cross = 0.5 * (xv**2 - (x**2) @ (self.latent**2))
        return self.dense(torch.cat([x, cross], dim=-1))

    def logits_all(self, user: UserBatch) -> Tensor:
        """[B, T] logits of every tag."""
        u = self.user_embedding(user).unsqueeze(1)  # [B, 1, d]
        cooccurrence = self.target.cooccurrence(user, None)
        target = self.target(self.encoder.tag, user, None, cooccurrence)  # [B, T, d + 4]
        dot = (u * self.encoder.tag.weight.unsqueeze(0)).sum(-1)
        logits = dot + self.tag_bias + self.target_out(target).squeeze(-1)
        return logits + self.offset(user, None, cooccurrence)

    def loss(self, batch: dict) -> tuple[Tensor, dict[str, float]]:
        loss = listwise_loss(self.logits_all(batch["user"]), batch["targets"])
        return loss, {"predict": float(loss.detach())}

    def score_all(self, user: UserBatch) -> Tensor:
        return torch.softmax(self.logits_all(user), dim=-1)
