"""Does a trained network use privileged knowledge? The oracle check of issue 11.

X_p (genre, director, ...) of the *target* item exists at training time only; AMVM is meant
to distil what it says about tags into substitutes computed from the tag alone. If that
worked, a network handed the true X_p of a test user's held-out items must rank tags better
than the same network handed the user's *history* X_p; if both rank alike, the privileged
pathway carries nothing. Next to it, a counting oracle with the same inputs,
Σ_v share_u(v)·P(t | v) with P counted on the train users' positives, says how much there
was to learn. Every line is scored on the test users: NDCG@10 and novel NDCG@10 (history
tags removed, ``training.metrics``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor, nn

from training.data.processed import TRAIN, ProcessedDataset
from training.data.ragged import Ragged
from training.features import bag_from_pairs, history_tags, sample_truth
from training.metrics import KS, discovery_metrics, top_k, user_means
from training.models.ctmvm import CTMVM
from training.models.layers import pool
from training.trainer import EVAL_BATCH, FeatureStore

Scorer = Callable[[dict[str, Tensor], np.ndarray], Tensor]
"""(user features of a batch, positions of the batch's users) -> scores [B, T]."""


def target_bags(data: ProcessedDataset, users: np.ndarray) -> dict[str, tuple[Tensor, Tensor]]:
    """Per field, the bag (ids, weights) of the privileged values of each user's held-out
    positive items: the "true X_p" a serving system never has."""
    position = np.full(data.n_users, -1, dtype=np.int64)
    position[users] = np.arange(len(users))
    chosen = np.flatnonzero(
        data.inter_is_sample & (data.inter_label == 1) & ~data.inter_sampled
        & (position[data.inter_user] >= 0)
    )  # fmt: skip
    bags = {}
    for field, per_item in data.item_privileged.items():
        values = per_item.take(data.inter_item[chosen])
        rows = np.repeat(position[data.inter_user[chosen]], values.lengths())
        bag = bag_from_pairs(rows, values.values, len(users))
        bags[field] = (torch.as_tensor(bag.ids), torch.as_tensor(bag.weights))
    return bags


def value_tag_conditional(data: ProcessedDataset, field: str) -> sp.csr_matrix:
    """[values, T] P(t | v): over the train users' positive interactions, the share of tag
    t among the tags of interactions whose item has value v."""
    train = data.user_split[data.inter_user] == TRAIN
    chosen = np.flatnonzero(train & (data.inter_label == 1) & ~data.inter_sampled)
    counts = incidence(data.item_privileged[field].take(data.inter_item[chosen]),
                       len(data.privileged_names[field])).T @ incidence(
        data.inter_tags.take(chosen), data.n_tags)  # fmt: skip
    totals = np.asarray(counts.sum(axis=1)).ravel()
    scale = np.divide(1.0, totals, out=np.zeros_like(totals), where=totals > 0)
    return (sp.diags(scale) @ counts).tocsr()


def incidence(rows: Ragged, n_cols: int) -> sp.csr_matrix:
    """[rows, n_cols] 0/1 matrix of a ragged array."""
    return sp.csr_matrix(
        (np.ones(len(rows.values)), (rows.row_ids(), rows.values)), shape=(len(rows), n_cols)
    )


def counting_oracle(data: ProcessedDataset, bags: dict[str, tuple[Tensor, Tensor]]) -> Scorer:
    """Σ_fields Σ_v share_u(v)·P(t | v) for the given per-user value bags."""
    conditionals = {f: value_tag_conditional(data, f) for f in bags}

    def score(_: dict[str, Tensor], rows: np.ndarray) -> Tensor:
        total = np.zeros((len(rows), data.n_tags))
        for field, (ids, weights) in bags.items():
            share = np.zeros((len(rows), conditionals[field].shape[0]))
            np.add.at(share, (np.arange(len(rows))[:, None], ids[rows].numpy()),
                      weights[rows].numpy())  # fmt: skip
            total += conditionals[field].T.dot(share.T).T
        return torch.as_tensor(total)

    return score


def privileged_embeddings(model: CTMVM, bags: dict[str, tuple[Tensor, Tensor]], rows) -> list:
    return [pool(model.encoder.privileged[f], bags[f][0][rows], bags[f][1][rows])
            for f in model.fields]  # fmt: skip


def main_with_privileged(model: CTMVM, bags: dict[str, tuple[Tensor, Tensor]] | None) -> Scorer:
    """Φ_main given, per tag, its view closest to a per-user X_p (what L_aux trains), from
    ``bags``, or from the user's history values when ``bags`` is None."""

    def score(user: dict[str, Tensor], rows: np.ndarray) -> Tensor:
        x_user = model.encoder(user)
        tags = model.encoder.tag.weight
        selected, matches = [], []
        for i, field in enumerate(model.fields):
            if bags is None:
                x_p = model.encoder.history_privileged(x_user, field)
            else:
                x_p = privileged_embeddings(model, bags, rows)[i]
            views = model.views[field](tags)  # [T, N, d]
            distance = ((views.unsqueeze(0) - x_p[:, None, None, :]) ** 2).mean(-1)  # [B, T, N]
            closest = distance.argmin(dim=-1)  # [B, T]
            chosen = views[torch.arange(len(tags)).unsqueeze(0), closest]  # [B, T, d]
            selected.append(chosen)
            matches.append(model.match(x_user, field, chosen))
        return torch.softmax(model.head(user, x_user, None, selected, matches), dim=-1)

    return score


def supplementary_with(model: CTMVM, bags: dict[str, tuple[Tensor, Tensor]] | None) -> Scorer:
    """Φ_supp given the true X_p (``bags``) or the user's history X_p (None)."""

    def score(user: dict[str, Tensor], rows: np.ndarray) -> Tensor:
        if bags is None:
            x_user = model.encoder(user)
            x_ps = [model.encoder.history_privileged(x_user, f) for f in model.fields]
        else:
            x_ps = privileged_embeddings(model, bags, rows)
        return torch.softmax(model.supplementary_all(user, x_ps), dim=-1)

    return score


@torch.no_grad()
def evaluate_scorer(
    scorer: Scorer, store: FeatureStore, users: np.ndarray, truth: np.ndarray, history: np.ndarray
) -> dict[str, float]:
    ranked, novel = [], []
    for start in range(0, len(users), EVAL_BATCH):
        rows = np.arange(start, min(start + EVAL_BATCH, len(users)))
        user = store.gather(torch.as_tensor(users[rows], dtype=torch.int64))
        scores = scorer(user, rows).double().numpy().copy()
        ranked.append(top_k(scores, max(KS)))
        scores[history[rows]] = -np.inf
        novel.append(top_k(scores, max(KS)))
    means = user_means(
        discovery_metrics(np.concatenate(ranked), np.concatenate(novel), truth, history)
    )
    return {k: means[k] for k in ("ndcg@10", "novel_ndcg@10", "repeat_ndcg@10")}


def diagnose(model: nn.Module, store: FeatureStore, data: ProcessedDataset) -> list[dict]:
    """One row per scorer (``name``, ``input``, metrics) on the test users with a truth."""
    users = data.users_in("test")
    truth = sample_truth(data, users)
    keep = truth.any(axis=1)
    users, truth = users[keep], truth[keep]
    history = history_tags(data, users)
    true_bags = target_bags(data, users)
    hist_bags = {f: (store.tensors[f"hist_{f}"][users], store.tensors[f"hist_{f}_w"][users])
                 for f in data.privileged_names}  # fmt: skip
    scorers: list[tuple[str, str, Scorer]] = [
        ("served model", "user features", lambda user, rows: model.score_all(user)),
    ]
    if isinstance(model, CTMVM):
        model.eval()
        main, supp = "main network, f_k closest to X_p", "supplementary network"
        scorers += [
            (main, "true target X_p", main_with_privileged(model, true_bags)),
            (main, "history X_p", main_with_privileged(model, None)),
            (supp, "true target X_p", supplementary_with(model, true_bags)),
            (supp, "history X_p", supplementary_with(model, None)),
        ]
    scorers += [
        ("counting oracle P(t | X_p)", "true target X_p", counting_oracle(data, true_bags)),
        ("counting oracle P(t | X_p)", "history X_p", counting_oracle(data, hist_bags)),
    ]
    return [
        {"scorer": name, "input": given, "users": len(users),
         **evaluate_scorer(scorer, store, users, truth, history)}
        for name, given, scorer in scorers
    ]  # fmt: skip
