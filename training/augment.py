"""More training views of the train users: earlier history/sample cuts.

A model that scores tags from a user's history must generalise across users, and a public
data set has few train users (about 1,200 on movielens-2k): the network quickly memorises
their pooled history vectors. Every train user's *history* period is itself a time-ordered
log, so cutting it again (at ``cut`` of its length) gives one more (features, targets) view
of the same user: the first part as history, the rest of the history period as samples.

The views are appended as extra train "users" (ids ``<user>#<cut>``), so the rest of the
pipeline (features, single-tag rows, SVE weights) is unchanged. Only the train split is
augmented; validation and test users, and their samples, are untouched, and no view ever
reads the user's real sample period.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from training import sve
from training.data.processed import TRAIN, ProcessedDataset
from training.protocol import history_lengths


def augment_train_users(data: ProcessedDataset, cuts: list[float]) -> ProcessedDataset:
    """``data`` plus one view per (train user, cut) with at least one sample."""
    if not cuts:
        return data
    for cut in cuts:
        if not 0.0 < cut < 1.0:
            raise ValueError(f"augment cut must be strictly between 0 and 1, got {cut}")
    train = np.flatnonzero(data.user_split == TRAIN)
    starts, ends = data.user_offsets[train], data.user_cut[train]  # the history periods
    lengths = ends - starts
    rows_of_views, view_offsets, view_cuts, view_user, view_ids = [], [0], [], [], []
    for cut in cuts:
        history = _cuts(data.inter_time, starts, lengths, cut)
        for u, start, n, k in zip(train, starts, lengths, history, strict=True):
            if k >= n:  # no sample left in this view
                continue
            rows_of_views.append(np.arange(start, start + n))
            view_cuts.append(view_offsets[-1] + k)
            view_offsets.append(view_offsets[-1] + n)
            view_user.append(u)
            view_ids.append(f"{data.user_ids[u]}#{cut:g}")
    if not view_user:
        return data
    source = np.concatenate(rows_of_views)
    base = len(data.inter_item)
    copies = data.inter_tags.take(source)
    inter_tags = data.inter_tags.concat(copies)
    n_views = len(view_user)
    view_of_row = np.repeat(np.arange(n_views), np.diff(view_offsets))
    is_sample = np.arange(len(source)) >= np.repeat(np.asarray(view_cuts), np.diff(view_offsets))
    phi = {credit: np.zeros(len(copies.values), dtype=np.float32) for credit in sve.CREDITS}
    targets = np.flatnonzero(is_sample & (data.inter_label[source] == 1))
    owner = np.asarray(view_user)[view_of_row]
    observed = np.flatnonzero(~data.inter_sampled & (data.inter_label == 1))
    positions = copies.value_positions(targets)
    for credit in sve.CREDITS:
        phi[credit][positions] = sve.batch_shapley(
            copies.take(targets), owner[targets], data.inter_tags.take(observed),
            data.inter_user[observed], credit=credit,
        )  # fmt: skip
    weights = np.ones(len(copies.values), dtype=np.float32)
    offsets = np.r_[0, np.cumsum(copies.lengths()[targets])]
    weights[positions] = sve.batch_sve_weights(
        phi[data.meta["protocol"]["credit"]][positions].astype(np.float64), offsets,
        data.meta["protocol"]["tau"],
    )  # fmt: skip
    n_users = data.n_users
    return dataclasses.replace(
        data,
        user_ids=[*data.user_ids, *view_ids],
        user_attributes={
            name: np.concatenate([values, values[np.asarray(view_user)]])
            for name, values in data.user_attributes.items()
        },
        user_split=np.concatenate([data.user_split, np.full(n_views, TRAIN, dtype=np.int8)]),
        user_offsets=np.concatenate([data.user_offsets, base + np.asarray(view_offsets[1:])]),
        user_cut=np.concatenate([data.user_cut, base + np.asarray(view_cuts)]),
        inter_item=np.concatenate([data.inter_item, data.inter_item[source]]),
        inter_label=np.concatenate([data.inter_label, data.inter_label[source]]),
        inter_time=np.concatenate([data.inter_time, data.inter_time[source]]),
        inter_sampled=np.concatenate([data.inter_sampled, np.zeros(len(source), dtype=bool)]),
        inter_tags=inter_tags,
        phi_contains=np.concatenate([data.phi_contains, phi["contains"]]),
        phi_covers=np.concatenate([data.phi_covers, phi["covers"]]),
        sve_weight=np.concatenate([data.sve_weight, weights]),
        raw_index={**data.raw_index, "view_user": np.r_[np.arange(n_users), view_user]},
    )


def _cuts(time: np.ndarray, starts: np.ndarray, lengths: np.ndarray, cut: float) -> np.ndarray:
    """History length of each view: the protocol's tie-safe cut applied to the history."""
    index = np.concatenate([np.arange(s, s + n) for s, n in zip(starts, lengths, strict=True)])
    offsets = np.r_[0, np.cumsum(lengths)]
    return history_lengths(time[index], offsets, cut)
