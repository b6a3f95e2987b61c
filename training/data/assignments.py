"""Tag assignments -> interactions, for the self-tagging sets (HetRec, MovieLens tag files).

An interaction is a distinct (user, item) pair, its coalition is the set of tags that user
gave that item, its label is 1 and its time is the pair's first assignment. The grouping runs
in numpy on integer keys because assignment files have up to ~440k rows; the loaders only
parse their files into the arrays this module takes.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from training.data.ragged import Ragged
from training.data.raw import RawDataset, Vocabulary

Field = tuple[Vocabulary, Ragged]
PrivilegedBuilder = Callable[[np.ndarray], dict[str, Field]]
"""Privileged fields for the items, given their sorted raw ids (one row per id)."""


def group_assignments(
    name: str,
    user: np.ndarray,
    item: np.ndarray,
    tag: np.ndarray,
    time: np.ndarray,
    tag_names: list[str],
    privileged: PrivilegedBuilder,
) -> RawDataset:
    """One row per assignment in; ``user`` and ``item`` are raw integer ids, ``tag`` indexes
    ``tag_names`` and ``time`` is unix seconds. Users and items are numbered in id order."""
    user_raw, user_index = np.unique(user, return_inverse=True)
    item_raw, item_index = np.unique(item, return_inverse=True)
    n_items = len(item_raw)
    pair_key, pair_index = np.unique(
        user_index.astype(np.int64) * n_items + item_index, return_inverse=True
    )
    dataset = RawDataset(
        name=name,
        tag_names=tag_names,
        user_ids=[str(u) for u in user_raw.tolist()],
        item_ids=[str(i) for i in item_raw.tolist()],
        inter_user=(pair_key // n_items).astype(np.int32),
        inter_item=(pair_key % n_items).astype(np.int32),
        inter_label=np.ones(len(pair_key), dtype=np.int8),
        inter_time=_earliest(pair_index, time, len(pair_key)),
        inter_tags=Ragged.from_pairs(pair_index, tag, len(pair_key)),
        item_tags=Ragged.from_pairs(item_index, tag, n_items),
        tag_counts=np.bincount(tag, minlength=len(tag_names)).astype(np.int64),
        privileged=privileged(item_raw),
        explicit_negatives=False,
    )
    dataset.validate()
    return dataset


def _earliest(group: np.ndarray, time: np.ndarray, n_groups: int) -> np.ndarray:
    """Minimum time per group; every group id in ``range(n_groups)`` occurs at least once."""
    order = np.argsort(group, kind="stable")
    starts = np.searchsorted(group[order], np.arange(n_groups))
    return np.minimum.reduceat(time[order], starts).astype(np.int64)
