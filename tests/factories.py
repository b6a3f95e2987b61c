"""Small raw data sets built in code, shared by the protocol and storage tests."""

from __future__ import annotations

import numpy as np

from training.data.ragged import Ragged
from training.data.raw import RawDataset, Vocabulary


def make_raw(
    *, n_users: int = 60, n_items: int = 40, n_tags: int = 12, explicit: bool = False, seed: int = 0
) -> RawDataset:
    """A random tagging log with coarse timestamps (many ties) and two privileged fields."""
    rng = np.random.default_rng(seed)
    item_tags = [
        sorted(rng.choice(n_tags, size=rng.integers(1, 5), replace=False)) for _ in range(n_items)
    ]
    users, items, labels, times, coalitions = [], [], [], [], []
    for u in range(n_users):
        n = int(rng.integers(1, 15))
        for i in rng.choice(n_items, size=n, replace=False):
            users.append(u)
            items.append(int(i))
            labels.append(int(rng.random() < 0.6) if explicit else 1)
            times.append(int(rng.integers(0, 6)) * 100)  # coarse: plenty of equal times
            # a user tags a non-empty subset of the item's tags
            tags = item_tags[i]
            keep = [t for t in tags if rng.random() < 0.7] or [tags[0]]
            coalitions.append(keep if not explicit else list(tags))
    tag_counts = np.bincount(np.concatenate([np.asarray(c) for c in coalitions]), minlength=n_tags)
    genre = Ragged.from_lists([[i % 3] for i in range(n_items)])
    brand = Ragged.from_lists([[i] for i in range(n_items)])  # every brand on one item
    raw = RawDataset(
        name="handmade",
        tag_names=[f"tag{t}" for t in range(n_tags)],
        user_ids=[f"u{u}" for u in range(n_users)],
        item_ids=[f"i{i}" for i in range(n_items)],
        inter_user=np.asarray(users, dtype=np.int32),
        inter_item=np.asarray(items, dtype=np.int32),
        inter_label=np.asarray(labels, dtype=np.int8),
        inter_time=np.asarray(times, dtype=np.int64),
        inter_tags=Ragged.from_lists(coalitions),
        item_tags=Ragged.from_lists(item_tags),
        tag_counts=tag_counts.astype(np.int64),
        privileged={
            "genre": (Vocabulary(["g0", "g1", "g2"]), genre),
            "brand": (Vocabulary([f"b{i}" for i in range(n_items)]), brand),
        },
        user_attributes={
            "age": (Vocabulary(["young", "old"]), (np.arange(n_users) % 2).astype(np.int32))
        },
        explicit_negatives=explicit,
    )
    raw.validate()
    return raw
