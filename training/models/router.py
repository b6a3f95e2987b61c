"""CAMN's collaborative attribute routing (paper 002) as a learned credit, against SVE.

Shapley/SVE gives each tag of a clicked coalition a fixed credit counted from the user's
other clicks. The router *learns* it: it scores every tag of the coalition from the user and
the tag, keeps the top q, normalises them (softmax over the kept ones, the rest get 0), and
the scores weight that interaction's targets exactly where SVE weights would (p_k · |M|, so
an interaction still carries |M| units of mass). CAMN's diversity loss, Σ_{i<j} p_i p_j over
each coalition, pushes the scores apart so the router commits to the decisive tags instead of
spreading evenly. It trains through the listwise loss itself: mass moves to the tags the
user's profile explains, which on the synthetic world are the planted decisive ones
(``benchmarks/bench_credit.py`` measures which credit recovers them better).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class CreditRouter(nn.Module):
    def __init__(self, user_dim: int, dim: int, hidden: int, top_q: int) -> None:
        super().__init__()
        self.user = nn.Linear(user_dim, hidden)
        self.tag = nn.Linear(dim, hidden, bias=False)
        self.out = nn.Linear(hidden, 1, bias=False)
        self.top_q = top_q

    def forward(self, x_user: Tensor, tag_emb: Tensor, mask: Tensor) -> Tensor:
        """x_user [R, Du], tag_emb [R, M, d], mask [R, M] (real tags) -> p [R, M]: zero
        outside the top q of each row and on padding, summing to 1 per row."""
        hidden = torch.tanh(self.user(x_user).unsqueeze(1) + self.tag(tag_emb))
        scores = self.out(hidden).squeeze(-1).masked_fill(~mask, float("-inf"))
        q = min(self.top_q, scores.shape[1])
        kth = scores.topk(q, dim=1).values[:, -1:]  # the q-th best score of each row
        kept = (scores >= kth) & mask
        return torch.softmax(scores.masked_fill(~kept, float("-inf")), dim=1)

    @staticmethod
    def diversity(p: Tensor) -> Tensor:
        """Mean over coalitions of Σ_{i<j} p_i p_j = (1 − Σ p_i²) / 2."""
        return ((1 - (p**2).sum(dim=1)) / 2).mean()


def routed_targets(
    router: CreditRouter, x_user: Tensor, tag_table: nn.Embedding, coalitions: dict, n_tags: int
) -> tuple[Tensor, Tensor]:
    """The [B, T] target masses of a batch from its held-out coalitions (``owner`` [R] the
    batch row, ``tags`` / ``mask`` [R, M]) and the diversity loss."""
    tags, mask, owner = coalitions["tags"], coalitions["mask"], coalitions["owner"]
    p = router(x_user[owner], tag_table(tags), mask)
    mass = p * mask.sum(dim=1, keepdim=True)  # |M| units per interaction, as SVE gives
    targets = torch.zeros(x_user.shape[0], n_tags, dtype=mass.dtype, device=mass.device)
    rows = owner.unsqueeze(1).expand_as(tags)
    targets = targets.index_put((rows[mask], tags[mask]), mass[mask], accumulate=True)
    return targets, CreditRouter.diversity(p)
