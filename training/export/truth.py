"""What each user truly likes, for the A/B simulator (never read by the service).

On synthetic data that is the planted ``user_tag_affinity``; on real data, the tags of the
user's held-out sample interactions (what they went on to click, which no model saw).
Weights are scaled so the user's strongest interest is 1.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from training.data.processed import SPLITS, ProcessedDataset
from training.export.catalogue import _truth_tags

DIGITS = 6


def truth_source(data: ProcessedDataset) -> str:
    return "planted" if "user_tag_affinity" in data.truth else "held-out"


def truth_records(data: ProcessedDataset, splits: tuple[str, ...]) -> Iterator[dict[str, Any]]:
    """One record per user of ``splits`` with at least one known interest."""
    users = data.users_in(*splits)
    if truth_source(data) == "planted":
        affinity = data.truth["user_tag_affinity"]
        rows = affinity[data.raw_index["user"]][:, data.raw_index["tag"]]
    else:
        held_out = _truth_tags(data)
        rows = np.zeros((data.n_users, data.n_tags), dtype=np.float32)
        rows[np.repeat(np.arange(data.n_users), held_out.lengths()), held_out.values] = 1.0
    for u in users:
        row = rows[u]
        top = row.max(initial=0.0)
        if top <= 0:
            continue
        tags = np.flatnonzero(row > 0)
        yield {
            "user_id": data.user_ids[u],
            "split": SPLITS[int(data.user_split[u])],
            "tags": [[int(t), round(float(row[t] / top), DIGITS)] for t in tags],
        }
