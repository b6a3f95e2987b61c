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


_PLANTED = ("user_tag_affinity", "user_tag_offsets")  # dense or sparse (CSR) planted truth


def truth_source(data: ProcessedDataset) -> str:
    return "planted" if any(key in data.truth for key in _PLANTED) else "held-out"


def truth_records(data: ProcessedDataset, splits: tuple[str, ...]) -> Iterator[dict[str, Any]]:
    """One record per user of ``splits`` with at least one known interest."""
    for u, tags, weights in _interests(data, data.users_in(*splits)):
        top = weights.max(initial=0.0)
        if top <= 0:
            continue
        known = weights > 0
        yield {
            "user_id": data.user_ids[u],
            "split": SPLITS[int(data.user_split[u])],
            "tags": [
                [int(t), round(float(w / top), DIGITS)]
                for t, w in zip(tags[known], weights[known], strict=True)
            ],
        }


def _interests(
    data: ProcessedDataset, users: np.ndarray
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Per user: ascending tag ids (processed indices) and their weights, one user at a time
    so a million-user world never needs a dense users x tags matrix."""
    if "user_tag_affinity" in data.truth:  # dense planted truth (small worlds)
        affinity = data.truth["user_tag_affinity"]
        tag_index = data.raw_index["tag"]
        all_tags = np.arange(data.n_tags)
        for u in users:
            yield int(u), all_tags, affinity[data.raw_index["user"][u], tag_index]
    elif "user_tag_offsets" in data.truth:  # sparse planted truth (large worlds)
        offsets, ids, values = (data.truth[f"user_tag_{k}"] for k in ("offsets", "ids", "values"))
        to_processed = np.full(len(data.truth["tag_topic"]), -1, dtype=np.int64)
        to_processed[data.raw_index["tag"]] = np.arange(data.n_tags)  # -1: tag filtered out
        for u in users:
            raw = data.raw_index["user"][u]
            row = slice(int(offsets[raw]), int(offsets[raw + 1]))
            tags = to_processed[ids[row]]
            kept = tags >= 0
            order = np.argsort(tags[kept])
            yield int(u), tags[kept][order], values[row][kept][order]
    else:  # real data: the tags of the held-out sample interactions
        held_out = _truth_tags(data)
        for u in users:
            tags = np.unique(held_out[int(u)])
            yield int(u), tags, np.ones(len(tags), dtype=np.float32)
