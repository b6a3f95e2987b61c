"""``youtube`` / ``sve``: the main network Φ_main(X_u, X_t) of the CTMVM paper.

An MLP [128, 64, 1] with tanh, tanh, sigmoid over the concatenation of X_u (pooled history),
X_t (the target tag's embedding) and the shared target-aware signal. ``sve`` is the same
network trained with SVE gradient weights (the weights come with the batch, so the two
differ only in the data they are given).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from training.models.layers import TargetAware, UserBatch, UserEncoder, mlp


class Dims:
    """Sizes a model needs from the data set."""

    def __init__(
        self, n_tags: int, privileged_sizes: dict[str, int], attribute_sizes: list[int]
    ) -> None:
        self.n_tags = n_tags
        self.privileged_sizes = privileged_sizes
        self.attribute_sizes = attribute_sizes


def weighted_bce(logits: Tensor, labels: Tensor, weights: Tensor) -> Tensor:
    """Mean of w · BCE: the SVE weight scales each sample's gradient."""
    losses = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    return (weights * losses).mean()


class MainNetwork(nn.Module):
    """Φ_main(X_u, X_t[, extra]) with the shared encoders; the base of every MLP model."""

    def __init__(self, dims: Dims, config: dict, extra_dim: int = 0) -> None:
        super().__init__()
        d = config["dim"]
        self.encoder = UserEncoder(dims.n_tags, dims.privileged_sizes, dims.attribute_sizes, d)
        self.target = TargetAware(d)
        self.tag_side_dim = d + self.target.out_dim
        in_dim = self.encoder.out_dim + self.tag_side_dim + extra_dim
        self.main = mlp(
            [in_dim, *config["hidden"], 1],
            config.get("activation", "tanh"),
            config.get("dropout", 0.0),
        )
        # wide part: the target-aware scalars and a per-tag bias go straight to the logit,
        # so reproducing "the user's own frequent tags, then popular ones" is easy and the
        # deep part learns what counting cannot (co-occurrence, privileged knowledge)
        self.wide = nn.Linear(TargetAware.out_extra, 1)
        self.tag_bias = nn.Parameter(torch.zeros(dims.n_tags))
        self.register_buffer("score_prior", torch.zeros(dims.n_tags))

    def inference_bias(self) -> Tensor:
        """[T] per-tag bias of scoring: the learned bias plus the sampling-bias correction
        (``training.negatives.score_prior``), which training never sees."""
        return self.tag_bias + self.score_prior

    def tag_side_rows(self, user: UserBatch, tags: Tensor) -> Tensor:
        """[B, d + d + 2]: X_t and the target-aware signal for one tag per row."""
        return torch.cat(
            [self.encoder.tag(tags), self.target.rows(self.encoder.tag, user, tags)], dim=-1
        )

    def tag_side_all(self, user: UserBatch) -> Tensor:
        """[B, T, d + d + 2] for every tag as the target."""
        embeddings = self.encoder.tag.weight
        batch = user["hist_tags"].shape[0]
        return torch.cat(
            [
                embeddings.unsqueeze(0).expand(batch, -1, -1),
                self.target.all_tags(self.encoder.tag, user),
            ],
            dim=-1,
        )

    def main_logit(self, x_user: Tensor, tag_side: Tensor, bias: Tensor, *extra: Tensor) -> Tensor:
        """Φ_main logit; ``bias`` is the tag bias of each row ([B]) or of all tags ([T])."""
        if tag_side.dim() == 3:  # all tags: broadcast the user part over T
            x_user = x_user.unsqueeze(1).expand(-1, tag_side.shape[1], -1)
        deep = self.main(torch.cat([x_user, tag_side, *extra], dim=-1)).squeeze(-1)
        wide = self.wide(tag_side[..., -TargetAware.out_extra :]).squeeze(-1)
        return deep + wide + bias

    def loss(self, batch: dict) -> tuple[Tensor, dict[str, float]]:
        user = batch["user"]
        tags = batch["tag"]
        logits = self.main_logit(
            self.encoder(user), self.tag_side_rows(user, tags), self.tag_bias[tags]
        )
        loss = weighted_bce(logits, batch["label"], batch["weight"])
        return loss, {"predict": float(loss.detach())}

    def score_all(self, user: UserBatch) -> Tensor:
        """Score in (0, 1) of every tag for every user of the batch: [B, T]; the click
        probability itself when ``score_prior`` is zero (``prior_correction`` 0)."""
        logits = self.main_logit(self.encoder(user), self.tag_side_all(user), self.inference_bias())
        return torch.sigmoid(logits)
