"""Model inputs built from a processed data set: user features X_u and item privileged X_p.

User features come from the user's *history* positives only (what a serving system knows
about a user): the bag of tags of those interactions, the bag of privileged values of their
items, and categorical attributes. Bags are stored padded as (ids, weights) with weights
that sum to 1 over a user's bag (the normalised frequencies) and 0 on padding, keeping the
``max_history`` most frequent entries. The same layout is the ONNX input contract later,
so the target-aware signal (a tag's normalised history frequency, attention of the target
tag over history tags) can be computed from user features alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from training.data.processed import TRAIN, ProcessedDataset


@dataclass
class Bag:
    """Padded bags of ids with normalised weights: ids int64 [R, L], weights float32 [R, L]."""

    ids: np.ndarray
    weights: np.ndarray

    @property
    def width(self) -> int:
        return self.ids.shape[1]


@dataclass
class UserFeatures:
    tags: Bag  # history tags
    privileged: dict[str, Bag]  # history privileged values per field
    attributes: np.ndarray  # int64 [U, A]: value + 1, 0 = unknown
    attribute_sizes: list[int]  # vocabulary size + 1 per attribute


def bag_from_pairs(
    rows: np.ndarray, values: np.ndarray, n_rows: int, max_len: int | None = None
) -> Bag:
    """Count (row, value) pairs and keep each row's most frequent values, normalised."""
    rows = np.asarray(rows, dtype=np.int64)
    values = np.asarray(values, dtype=np.int64)
    span = int(values.max(initial=0)) + 1
    keys, counts = np.unique(rows * span + values, return_counts=True)
    key_row, key_value = keys // span, keys % span
    order = np.lexsort((key_value, -counts, key_row))  # per row: most frequent first
    key_row, key_value, counts = key_row[order], key_value[order], counts[order]
    starts = np.searchsorted(key_row, np.arange(n_rows))
    rank = np.arange(len(key_row)) - starts[key_row]
    per_row = np.bincount(key_row, minlength=n_rows)
    width = int(per_row.max(initial=0))
    if max_len is not None:
        width = min(width, max_len)
    width = max(width, 1)
    keep = rank < width
    ids = np.zeros((n_rows, width), dtype=np.int64)
    weights = np.zeros((n_rows, width), dtype=np.float32)
    ids[key_row[keep], rank[keep]] = key_value[keep]
    weights[key_row[keep], rank[keep]] = counts[keep]
    totals = weights.sum(axis=1, keepdims=True)
    np.divide(weights, totals, out=weights, where=totals > 0)
    return Bag(ids, weights)


def user_features(data: ProcessedDataset, max_history: int) -> UserFeatures:
    """Bags of the tags and privileged values of every user's positive history."""
    users = data.inter_user
    history = np.flatnonzero(~data.inter_is_sample & (data.inter_label == 1))
    coalitions = data.inter_tags.take(history)
    tags = bag_from_pairs(
        np.repeat(users[history], coalitions.lengths()), coalitions.values, data.n_users,
        max_history,
    )  # fmt: skip
    privileged = {}
    for field, per_item in data.item_privileged.items():
        values = per_item.take(data.inter_item[history])
        privileged[field] = bag_from_pairs(
            np.repeat(users[history], values.lengths()), values.values, data.n_users,
            max_history,
        )  # fmt: skip
    names = list(data.attribute_names)
    attributes = np.zeros((data.n_users, len(names)), dtype=np.int64)
    for a, name in enumerate(names):
        attributes[:, a] = data.user_attributes[name].astype(np.int64) + 1
    sizes = [len(data.attribute_names[n]) + 1 for n in names]
    return UserFeatures(tags, privileged, attributes, sizes)


def item_privileged(data: ProcessedDataset) -> dict[str, Bag]:
    """X_p of every item: its values per privileged field (a bag, usually of one value)."""
    return {
        field: bag_from_pairs(per_item.row_ids(), per_item.values, len(per_item))
        for field, per_item in data.item_privileged.items()
    }


def sample_truth(data: ProcessedDataset, users: np.ndarray) -> np.ndarray:
    """[len(users), T] bool: the tags of each user's observed positive sample interactions."""
    truth = np.zeros((len(users), data.n_tags), dtype=bool)
    position = np.full(data.n_users, -1, dtype=np.int64)
    position[users] = np.arange(len(users))
    chosen = np.flatnonzero(
        data.inter_is_sample
        & (data.inter_label == 1)
        & ~data.inter_sampled
        & (position[data.inter_user] >= 0)
    )
    coalitions = data.inter_tags.take(chosen)
    rows = np.repeat(position[data.inter_user[chosen]], coalitions.lengths())
    truth[rows, coalitions.values] = True
    return truth


def tag_popularity(data: ProcessedDataset) -> np.ndarray:
    """Share of each tag among the train users' observed positive (user, tag) occurrences."""
    train = data.user_split[data.inter_user] == TRAIN
    chosen = np.flatnonzero(train & (data.inter_label == 1) & ~data.inter_sampled)
    counts = np.bincount(data.inter_tags.take(chosen).values, minlength=data.n_tags)
    return (counts / max(counts.sum(), 1)).astype(np.float64)


def history_tags(data: ProcessedDataset, users: np.ndarray) -> np.ndarray:
    """[len(users), T] bool: the tags of each user's positive history interactions (the
    tags a profile could repeat; everything else is novel to the user)."""
    history = np.zeros((len(users), data.n_tags), dtype=bool)
    position = np.full(data.n_users, -1, dtype=np.int64)
    position[users] = np.arange(len(users))
    chosen = np.flatnonzero(
        ~data.inter_is_sample & (data.inter_label == 1) & (position[data.inter_user] >= 0)
    )
    coalitions = data.inter_tags.take(chosen)
    history[np.repeat(position[data.inter_user[chosen]], coalitions.lengths()),
            coalitions.values] = True  # fmt: skip
    return history


def tags_used(data: ProcessedDataset) -> sp.csr_matrix:
    """[U, T] 0/1: the tags each *train* user used in its observed positive interactions
    (the log co-occurrence is counted on). An augmented view (``augment``) gets its
    original user's row, since that user's whole log is in the counts."""
    train = data.user_split[data.inter_user] == TRAIN
    owner = data.raw_index.get("view_user", np.arange(data.n_users))
    original = owner[data.inter_user] == data.inter_user
    chosen = np.flatnonzero(train & original & (data.inter_label == 1) & ~data.inter_sampled)
    coalitions = data.inter_tags.take(chosen)
    rows = np.repeat(data.inter_user[chosen], coalitions.lengths())
    used = sp.csr_matrix(
        (np.ones(len(rows), dtype=np.float32), (rows, coalitions.values)),
        shape=(data.n_users, data.n_tags),
    )
    used.data[:] = 1.0  # duplicates were summed on construction: a user counts once
    return used[owner]


def tag_cooccurrence_counts(data: ProcessedDataset) -> np.ndarray:
    """[T, T] float32: how many train users used both h and t (the diagonal: used h).

    Counted per user, not per item, so a tag one user applies to hundreds of items does not
    dominate. P(t | h) = counts[h, t] / counts[h, h] (``models.layers.CoOccurrence``)."""
    owner = data.raw_index.get("view_user", np.arange(data.n_users))
    used = tags_used(data)[np.flatnonzero(owner == np.arange(data.n_users))]
    return (used.T @ used).toarray().astype(np.float32)
