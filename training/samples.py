"""What a training epoch feeds the models, built once as numpy arrays.

- **Targets**, per train user: the tags of the user's held-out positive interactions, each
  with its mass (the SVE weight of the (interaction, tag) sample, or 1), for the listwise
  softmax; and the tags of the user's *real* item negatives (explicit low ratings, unclicked
  impressions; never the protocol's sampled items) that are not also targets.
- **Privileged rows**, one per held-out positive (interaction, tag): the user, the item
  (whose X_p the privileged pathway needs) and the tag's weight. Each row later gets K
  uniformly drawn negative tags that keep its item.

``batch`` turns a set of users into the tensors ``model.loss`` reads.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from training import sve
from training.data.processed import TRAIN, ProcessedDataset, SingleTagSamples
from training.model_names import USES_SVE


@dataclass
class Csr:
    """Rows of (column, value) pairs: row r owns ``cols[offsets[r]:offsets[r + 1]]``."""

    offsets: np.ndarray
    cols: np.ndarray
    values: np.ndarray

    @classmethod
    def build(cls, rows: np.ndarray, cols: np.ndarray, values: np.ndarray, n_rows: int) -> Csr:
        order = np.lexsort((cols, rows))
        offsets = np.zeros(n_rows + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=n_rows), out=offsets[1:])
        return cls(offsets, cols[order], values[order])

    def dense(self, rows: np.ndarray, n_cols: int) -> np.ndarray:
        """[len(rows), n_cols] float32 with the values of ``rows`` scattered in (a row holds
        each column once)."""
        out = np.zeros((len(rows), n_cols), dtype=np.float32)
        lengths = self.offsets[rows + 1] - self.offsets[rows]
        index = np.repeat(self.offsets[rows], lengths) + _ranks(lengths)
        out[np.repeat(np.arange(len(rows)), lengths), self.cols[index]] = self.values[index]
        return out

    def rows_of(self, rows: np.ndarray) -> np.ndarray:
        """Positions (into ``cols``/``values``) of every entry of ``rows``."""
        lengths = self.offsets[rows + 1] - self.offsets[rows]
        return np.repeat(self.offsets[rows], lengths) + _ranks(lengths)


def _ranks(lengths: np.ndarray) -> np.ndarray:
    """0..n-1 within each of consecutive segments of the given lengths."""
    total = int(lengths.sum())
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.arange(total) - starts


@dataclass
class TrainingSamples:
    """Everything an epoch draws from (module docstring); users are indexed 0..n-1 in the
    order of ``users`` (data set user ids)."""

    users: np.ndarray  # data set ids of the train users with at least one target
    targets: Csr  # per user: tag -> mass
    negatives: Csr  # per user: tag -> 1 (real item negatives only)
    rows: Csr  # per user: held-out positive (interaction, tag) rows; values = row ids
    row_item: np.ndarray
    row_tag: np.ndarray
    row_interaction: np.ndarray
    row_weight: np.ndarray
    coalition_keys: np.ndarray  # sorted interaction * T + tag of every held-out positive
    proposal: np.ndarray  # [T] probability of drawing each tag as a privileged negative
    pair_item: np.ndarray  # (item, tag) of every observed positive of the train users,
    pair_tag: np.ndarray  # history included: the P(tag | X_p) task

    def __len__(self) -> int:
        return len(self.users)


def clicked_counts(data: ProcessedDataset) -> np.ndarray:
    """Per user, how many positive interactions its Shapley credit was counted over (an
    augmented view counts its original user's, as ``augment`` computes its φ that way)."""
    owner = data.raw_index.get("view_user", np.arange(data.n_users))
    users = data.inter_user
    observed = ~data.inter_sampled & (data.inter_label == 1) & (owner[users] == users)
    counts = np.bincount(users[observed], minlength=data.n_users)
    return counts[owner]


def sample_weights(data: ProcessedDataset, rows: SingleTagSamples, config: dict) -> np.ndarray:
    """SVE weight of every single-tag sample row: softmax(φ/τ)·|M| per positive interaction.

    ``credit_scale: count`` (the paper) uses φ in clicks (the fraction credit times the
    user's number of clicked sets); ``fraction`` keeps φ as a fraction, which makes the
    effective temperature τ·n_u and the weights nearly flat for active users."""
    phi = getattr(data, f"phi_{config['credit']}")[rows.position].astype(np.float64)
    if config.get("credit_scale", "count") == "count":
        phi = phi * clicked_counts(data)[rows.user]
    starts = np.flatnonzero(np.r_[True, rows.interaction[1:] != rows.interaction[:-1]])
    offsets = np.r_[starts, len(rows)]
    positive = rows.label[starts] == 1
    return sve.batch_sve_weights(phi, offsets, config["tau"], positive).astype(np.float32)


def uses_sve(name: str, config: dict) -> bool:
    """Whether ``name`` trains on SVE weights: an SVE model, in a family that keeps SVE on,
    with the Shapley credit (the router learns its own)."""
    shapley = config.get("credit_method", "shapley") == "shapley"
    return name in USES_SVE and bool(config.get("sve", True)) and shapley


def training_samples(data: ProcessedDataset, name: str, config: dict) -> TrainingSamples:
    rows = data.single_tag_samples("train")
    weight = sample_weights(data, rows, config) if uses_sve(name, config) else None
    positive = rows.label == 1
    real_negative = (rows.label == 0) & ~data.inter_sampled[rows.interaction]
    users = np.unique(rows.user[positive])
    index = np.full(data.n_users, -1, dtype=np.int64)
    index[users] = np.arange(len(users))
    mass = np.ones(len(rows), dtype=np.float32) if weight is None else weight
    pos_user, pos_tag = index[rows.user[positive]], rows.tag[positive].astype(np.int64)
    targets = _summed(pos_user, pos_tag, mass[positive], len(users), data.n_tags,
                      mean=config.get("target_mass", "sum") == "mean")  # fmt: skip
    neg_user = index[rows.user[real_negative]]
    neg_tag = rows.tag[real_negative].astype(np.int64)
    keep = neg_user >= 0
    neg_user, neg_tag = neg_user[keep], neg_tag[keep]
    is_target = np.isin(neg_user * data.n_tags + neg_tag, pos_user * data.n_tags + pos_tag)
    negatives = _summed(
        neg_user[~is_target],
        neg_tag[~is_target],
        np.ones(int((~is_target).sum()), np.float32),
        len(users),
        data.n_tags,
    )
    negatives.values[:] = 1.0  # fmt: skip
    row_ids = np.arange(len(pos_user))
    return TrainingSamples(
        users=users.astype(np.int64),
        targets=targets,
        negatives=negatives,
        rows=Csr.build(pos_user, row_ids, row_ids, len(users)),
        row_item=rows.item[positive].astype(np.int64),
        row_tag=pos_tag,
        row_interaction=rows.interaction[positive].astype(np.int64),
        row_weight=mass[positive],
        coalition_keys=np.unique(rows.interaction[positive].astype(np.int64) * data.n_tags
                                 + pos_tag),
        proposal=negative_proposal(pos_tag, data.n_tags, config),
        **item_tag_pairs(data),
    )  # fmt: skip


def item_tag_pairs(data: ProcessedDataset) -> dict[str, np.ndarray]:
    """Every (item, tag) of the train users' observed positive interactions, history and
    held-out alike: five times the held-out rows, to learn which tags go with which
    privileged values (no user features are involved, so using history leaks nothing)."""
    train = data.user_split[data.inter_user] == TRAIN
    chosen = np.flatnonzero(train & (data.inter_label == 1) & ~data.inter_sampled)
    tags = data.inter_tags.take(chosen)
    return {
        "pair_item": np.repeat(data.inter_item[chosen], tags.lengths()).astype(np.int64),
        "pair_tag": tags.values.astype(np.int64),
    }


def item_tag_rows(
    samples: TrainingSamples, n_rows: int, n_tags: int, config: dict, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """``n_rows`` random (item, tag) pairs with K negatives each (as ``privileged_rows``)."""
    ids = rng.integers(0, len(samples.pair_tag), size=min(n_rows, len(samples.pair_tag)))
    k = int(config.get("privileged_negatives", 32))
    negatives = rng.choice(n_tags, size=(len(ids), k), p=samples.proposal)
    tags = np.concatenate([samples.pair_tag[ids, None], negatives], axis=1)
    return {
        "item": samples.pair_item[ids],
        "tags": tags,
        "log_q": np.log(samples.proposal[tags]).astype(np.float32),
        "weights": np.ones((len(ids), 1), dtype=np.float32),
        "negative_mask": negatives != samples.pair_tag[ids, None],
    }


def negative_proposal(positive_tags: np.ndarray, n_tags: int, config: dict) -> np.ndarray:
    """Q(t) ∝ (count of t among the positives + 1)^α, α = ``negative_popularity`` (0: uniform).

    Uniform negatives are mostly rare tags any popularity prior dismisses, so they teach the
    privileged pathway little; popular ones are the plausible competitors where X_p decides.
    The loss subtracts log Q (Yi et al., RecSys 2019), so the sampled softmax still estimates
    the full one."""
    alpha = float(config.get("negative_popularity", 0.0))
    weights = (np.bincount(positive_tags, minlength=n_tags) + 1.0) ** alpha
    return weights / weights.sum()


def _summed(
    rows: np.ndarray,
    cols: np.ndarray,
    values: np.ndarray,
    n_rows: int,
    n_cols: int,
    mean: bool = False,
) -> Csr:
    """``Csr`` with duplicate (row, col) pairs summed (or averaged: ``target_mass: mean``
    counts a tag once per user however many held-out items carry it, as binary relevance
    does)."""
    keys, inverse = np.unique(rows * n_cols + cols, return_inverse=True)
    summed = np.bincount(inverse, weights=values, minlength=len(keys))
    if mean:
        summed = summed / np.bincount(inverse, minlength=len(keys))
    return Csr.build(keys // n_cols, keys % n_cols, summed.astype(np.float32), n_rows)


def privileged_rows(
    samples: TrainingSamples,
    batch_users: np.ndarray,
    n_tags: int,
    config: dict,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """The privileged rows of ``batch_users`` (positions in ``samples``): at most
    ``privileged_rows_per_user`` per user (drawn at random), each with K negatives drawn
    from ``samples.proposal``, their log Q, and a mask of draws that hit a tag of the row's
    own interaction."""
    cap = int(config.get("privileged_rows_per_user", 64))
    chosen = []
    for u in batch_users:
        start, end = samples.rows.offsets[u], samples.rows.offsets[u + 1]
        ids = samples.rows.values[start:end].astype(np.int64)
        chosen.append(ids if len(ids) <= cap else rng.choice(ids, cap, replace=False))
    ids = np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.int64)
    owner = np.repeat(np.arange(len(batch_users)), [len(c) for c in chosen])
    k = int(config.get("privileged_negatives", 32))
    negatives = rng.choice(n_tags, size=(len(ids), k), p=samples.proposal)
    keys = samples.row_interaction[ids, None] * n_tags + negatives
    hit = np.isin(keys, samples.coalition_keys)
    tags = np.concatenate([samples.row_tag[ids, None], negatives], axis=1)
    return {
        "owner": owner,
        "item": samples.row_item[ids],
        "tags": tags,
        "log_q": np.log(samples.proposal[tags]).astype(np.float32),
        "weights": samples.row_weight[ids, None],
        "negative_mask": ~hit,
    }


def coalitions(samples: TrainingSamples, batch_users: np.ndarray) -> dict[str, np.ndarray]:
    """The held-out positive coalitions of ``batch_users`` (positions in ``samples``),
    padded: ``owner`` [R] (position in the batch), ``tags`` and ``mask`` [R, M]."""
    ids = samples.rows.rows_of(batch_users)
    owner_of_row = np.repeat(
        np.arange(len(batch_users)),
        samples.rows.offsets[batch_users + 1] - samples.rows.offsets[batch_users],
    )
    ids = samples.rows.values[ids].astype(np.int64)
    interaction = samples.row_interaction[ids]
    order = np.lexsort((samples.row_tag[ids], interaction))
    ids, owner_of_row, interaction = ids[order], owner_of_row[order], interaction[order]
    starts = np.flatnonzero(np.r_[True, interaction[1:] != interaction[:-1]])
    lengths = np.diff(np.r_[starts, len(ids)])
    width = int(lengths.max(initial=1))
    tags = np.zeros((len(starts), width), dtype=np.int64)
    mask = np.zeros((len(starts), width), dtype=bool)
    row = np.repeat(np.arange(len(starts)), lengths)
    col = np.arange(len(ids)) - np.repeat(starts, lengths)
    tags[row, col], mask[row, col] = samples.row_tag[ids], True
    return {"owner": owner_of_row[starts], "tags": tags, "mask": mask}  # fmt: skip


def to_tensors(arrays: dict[str, np.ndarray], device: torch.device) -> dict[str, Tensor]:
    return {k: torch.as_tensor(v, device=device) for k, v in arrays.items()}
