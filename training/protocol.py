"""The evaluation protocol of the CTMVM paper, applied to any loaded data set (DESIGN §3).

1. drop tags seen fewer than ``min_tag_count`` times, then interactions left with no tag;
2. split users 80/20 into train/test at random (seeded), and a validation slice of the
   train users for model selection (never the test users);
3. per user, sort interactions by time: the first 80% are *history* (user features), the
   rest *samples*; the cut never splits interactions with the same timestamp, so history
   strictly precedes samples;
4. draw negatives (seeded) for data sets that have none, one batch per positive sample;
5. privileged values seen once among the train users' interactions become ``others``;
6. Shapley values of every tag of every positive sample and the SVE weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from training import sve
from training.data.processed import TEST, TRAIN, VALID, ProcessedDataset
from training.data.ragged import Ragged
from training.data.raw import RawDataset

OTHERS = "others"
CREDITS = ("contains", "covers")
_MAX_NEGATIVE_ROUNDS = 50


@dataclass(frozen=True)
class ProtocolConfig:
    min_tag_count: int
    seed: int = 0
    test_fraction: float = 0.2
    valid_fraction: float = 0.1
    history_fraction: float = 0.8
    negative_ratio: int = 1
    tau: float = 0.5
    credit: str = "contains"

    def __post_init__(self) -> None:
        if self.min_tag_count < 1:
            raise ValueError(f"min_tag_count must be >= 1, got {self.min_tag_count}")
        for name in ("test_fraction", "valid_fraction", "history_fraction"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise ValueError(f"{name} must be strictly between 0 and 1, got {value}")
        if self.negative_ratio < 0:
            raise ValueError(f"negative_ratio must be >= 0, got {self.negative_ratio}")
        if self.tau <= 0:
            raise ValueError(f"tau must be > 0, got {self.tau}")
        if self.credit not in CREDITS:
            raise ValueError(f"credit must be one of {CREDITS}, got {self.credit!r}")


def prepare_dataset(
    raw: RawDataset,
    config: ProtocolConfig,
    *,
    family: str,
    on_step: Callable[[str], None] = lambda step: None,
) -> tuple[ProcessedDataset, dict[str, Any]]:
    """Apply the protocol; returns the processed data set and its ``stats.json`` content."""
    raw.validate()
    seeds = np.random.SeedSequence(config.seed).spawn(2)

    on_step("filter tags")
    kept_tags = np.flatnonzero(raw.tag_counts >= config.min_tag_count)
    tag_map = _index_map(kept_tags, raw.n_tags)
    inter_tags = raw.inter_tags.map_values(tag_map)
    item_tags_all = raw.item_tags.map_values(tag_map)
    tagged = np.flatnonzero(inter_tags.lengths() > 0)
    kept_items = np.union1d(np.flatnonzero(item_tags_all.lengths() > 0), raw.inter_item[tagged])
    kept_users = np.unique(raw.inter_user[tagged])
    item_map = _index_map(kept_items, raw.n_items)
    user_map = _index_map(kept_users, raw.n_users)
    user = user_map[raw.inter_user[tagged]]
    item = item_map[raw.inter_item[tagged]].astype(np.int32)
    label = raw.inter_label[tagged].astype(np.int8)
    time = raw.inter_time[tagged].astype(np.int64)
    coalitions = inter_tags.take(tagged)
    item_tags = item_tags_all.take(kept_items)
    n_users, n_items = len(kept_users), len(kept_items)

    on_step("split users")
    user_split = _split_users(n_users, config, np.random.default_rng(seeds[0]))

    on_step("split history/samples")
    order = np.lexsort((item, time, user))
    user, item, label, time = user[order], item[order], label[order], time[order]
    coalitions = coalitions.take(order)
    offsets = _offsets(user, n_users)
    history_len = history_lengths(time, offsets, config.history_fraction)
    is_sample = np.arange(len(user)) >= np.repeat(offsets[:-1] + history_len, np.diff(offsets))
    sampled = np.zeros(len(user), dtype=bool)

    if not raw.explicit_negatives and config.negative_ratio > 0:
        on_step("sample negatives")
        neg_user, neg_item, neg_time = _sample_negatives(
            user,
            item,
            time,
            is_sample & (label == 1),
            n_items,
            config.negative_ratio,
            np.random.default_rng(seeds[1]),
        )
        user = np.concatenate([user, neg_user])
        item = np.concatenate([item, neg_item])
        time = np.concatenate([time, neg_time])
        label = np.concatenate([label, np.zeros(len(neg_user), dtype=np.int8)])
        is_sample = np.concatenate([is_sample, np.ones(len(neg_user), dtype=bool)])
        sampled = np.concatenate([sampled, np.ones(len(neg_user), dtype=bool)])
        coalitions = coalitions.concat(item_tags.take(neg_item))
        # history rows first, then samples by time; observed before drawn on equal times
        order = np.lexsort((item, sampled, time, is_sample, user))
        user, item, label, time = user[order], item[order], label[order], time[order]
        is_sample, sampled = is_sample[order], sampled[order]
        coalitions = coalitions.take(order)
        offsets = _offsets(user, n_users)
    user_cut = offsets[:-1] + history_len

    on_step("privileged values")
    observed_train = ~sampled & np.isin(user_split[user], (TRAIN, VALID))
    privileged_names, item_privileged = {}, {}
    for field, (vocab, values) in raw.privileged.items():
        names, per_item = _fold_rare_values(
            vocab.names, values.take(kept_items), item[observed_train]
        )
        privileged_names[field] = names
        item_privileged[field] = per_item

    on_step("shapley values")
    targets = np.flatnonzero(is_sample & (label == 1))
    clicked = np.flatnonzero(~sampled & (label == 1))
    positions = coalitions.value_positions(targets)
    phis = {}
    for credit in CREDITS:
        phi = np.zeros(len(coalitions.values), dtype=np.float32)
        phi[positions] = sve.batch_shapley(
            coalitions.take(targets),
            user[targets],
            coalitions.take(clicked),
            user[clicked],
            credit=credit,
        )
        phis[credit] = phi
    weight = np.ones(len(coalitions.values), dtype=np.float32)
    target_offsets = np.zeros(len(targets) + 1, dtype=np.int64)
    np.cumsum(coalitions.lengths()[targets], out=target_offsets[1:])
    weight[positions] = sve.batch_sve_weights(
        phis[config.credit][positions].astype(np.float64), target_offsets, config.tau
    )

    attributes = {
        name: (vocab.names, values[kept_users].astype(np.int32))
        for name, (vocab, values) in raw.user_attributes.items()
    }
    processed = ProcessedDataset(
        meta={"dataset": raw.name, "family": family, "protocol": asdict(config)},
        tag_names=[raw.tag_names[t] for t in kept_tags],
        tag_counts=raw.tag_counts[kept_tags].astype(np.int64),
        user_ids=[raw.user_ids[u] for u in kept_users],
        item_ids=[raw.item_ids[i] for i in kept_items],
        item_tags=item_tags,
        privileged_names=privileged_names,
        item_privileged=item_privileged,
        attribute_names={name: names for name, (names, _) in attributes.items()},
        user_attributes={name: values for name, (_, values) in attributes.items()},
        user_split=user_split,
        user_offsets=offsets,
        user_cut=user_cut,
        inter_item=item,
        inter_label=label,
        inter_time=time,
        inter_sampled=sampled,
        inter_tags=coalitions,
        phi_contains=phis["contains"],
        phi_covers=phis["covers"],
        sve_weight=weight,
        raw_index={"user": kept_users, "item": kept_items, "tag": kept_tags},
        truth=dict(raw.truth),
    )
    return processed, _stats(processed, raw)


# --------------------------------------------------------------------------- steps
def _index_map(kept: np.ndarray, size: int) -> np.ndarray:
    """old id -> new dense id, -1 for dropped ids."""
    mapping = np.full(size, -1, dtype=np.int64)
    mapping[kept] = np.arange(len(kept))
    return mapping


def _offsets(sorted_user: np.ndarray, n_users: int) -> np.ndarray:
    offsets = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(sorted_user, minlength=n_users), out=offsets[1:])
    return offsets


def _split_users(n_users: int, config: ProtocolConfig, rng: np.random.Generator) -> np.ndarray:
    permutation = rng.permutation(n_users)
    n_test = round(config.test_fraction * n_users)
    n_valid = round(config.valid_fraction * (n_users - n_test))
    split = np.full(n_users, TRAIN, dtype=np.int8)
    split[permutation[:n_test]] = TEST
    split[permutation[n_test : n_test + n_valid]] = VALID
    return split


def history_lengths(time: np.ndarray, offsets: np.ndarray, fraction: float) -> np.ndarray:
    """Per user, how many of its time-sorted interactions are history.

    The target is round(fraction * n), at least 1 and at most n - 1. When the cut would fall
    inside a run of equal timestamps it moves to the nearer edge of the run, so history
    strictly precedes samples; a user whose interactions all share one timestamp (or who
    has a single one) keeps them all as history and has no samples.
    """
    lengths = np.diff(offsets)
    history = np.empty(len(lengths), dtype=np.int64)
    for u, (start, n) in enumerate(zip(offsets[:-1], lengths, strict=True)):
        if n < 2:
            history[u] = n
            continue
        t = time[start : start + n]
        k = min(max(int(np.floor(fraction * n + 0.5)), 1), n - 1)
        if t[k - 1] != t[k]:
            history[u] = k
            continue
        lo = int(np.searchsorted(t, t[k], side="left"))
        hi = int(np.searchsorted(t, t[k], side="right"))
        candidates = [c for c in (lo, hi) if 1 <= c <= n - 1]
        history[u] = min(candidates, key=lambda c: abs(c - k)) if candidates else n
    return history


def _sample_negatives(
    user: np.ndarray,
    item: np.ndarray,
    time: np.ndarray,
    positive_sample: np.ndarray,
    n_items: int,
    ratio: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw ``ratio`` distinct untouched items per positive sample (uniform over items).

    Each negative takes the time of the positive it was drawn for, so it lands in the
    sample period. Draws that hit a touched item or repeat an earlier draw of the same
    user are redrawn; a user who touched (almost) every item gets fewer negatives.
    """
    source = np.repeat(np.flatnonzero(positive_sample), ratio)
    neg_user = user[source].astype(np.int64)
    neg_item = rng.integers(0, n_items, size=len(source))
    touched = np.unique(user.astype(np.int64) * n_items + item)
    valid = np.zeros(len(source), dtype=bool)
    for _ in range(_MAX_NEGATIVE_ROUNDS):
        key = neg_user * n_items + neg_item
        fresh = ~np.isin(key, touched)
        first = np.zeros(len(key), dtype=bool)
        first[np.unique(np.where(fresh, key, -1 - np.arange(len(key))), return_index=True)[1]] = (
            True
        )
        valid = fresh & first
        if valid.all():
            break
        redraw = ~valid
        neg_item[redraw] = rng.integers(0, n_items, size=int(redraw.sum()))
    return (
        neg_user[valid].astype(user.dtype),
        neg_item[valid].astype(np.int32),
        time[source][valid],
    )


def _fold_rare_values(
    names: list[str], per_item: Ragged, train_items: np.ndarray
) -> tuple[list[str], Ragged]:
    """Values seen fewer than twice among train interactions become ``others`` (id 0)."""
    value_counts = np.bincount(per_item.take(train_items).values, minlength=len(names)).astype(
        np.int64
    )
    frequent = np.flatnonzero(value_counts >= 2)
    mapping = np.zeros(len(names), dtype=np.int64)
    mapping[frequent] = np.arange(1, len(frequent) + 1)
    folded = Ragged.from_pairs(per_item.row_ids(), mapping[per_item.values], len(per_item))
    return [OTHERS, *(names[v] for v in frequent)], folded


def _stats(data: ProcessedDataset, raw: RawDataset) -> dict[str, Any]:
    is_sample = data.inter_is_sample
    rows = {split: data.single_tag_samples(split) for split in ("train", "valid", "test")}
    n_sample_users = np.bincount(data.inter_user[is_sample], minlength=data.n_users).astype(bool)
    coalition_sizes = data.inter_tags.lengths()
    return {
        "dataset": data.meta["dataset"],
        "users": data.n_users,
        "items": data.n_items,
        "tags": data.n_tags,
        "interactions": int((~data.inter_sampled).sum()),
        "train_users": int((data.user_split == TRAIN).sum()),
        "valid_users": int((data.user_split == VALID).sum()),
        "test_users": int((data.user_split == TEST).sum()),
        "users_without_samples": int((~n_sample_users).sum()),
        "history_interactions": int((~is_sample).sum()),
        "sample_interactions": int(is_sample.sum()),
        "sampled_negatives": int(data.inter_sampled.sum()),
        "train_samples": len(rows["train"]),
        "valid_samples": len(rows["valid"]),
        "test_samples": len(rows["test"]),
        "positives": int(rows["train"].label.sum()),
        "negatives": int(len(rows["train"]) - rows["train"].label.sum()),
        "max_coalition": int(coalition_sizes.max(initial=0)),
        "mean_coalition": round(float(coalition_sizes.mean()) if len(coalition_sizes) else 0.0, 4),
        "privileged": {field: len(names) for field, names in data.privileged_names.items()},
        "attributes": {name: len(names) for name, names in data.attribute_names.items()},
        "dropped": {
            "tags_below_min_count": raw.n_tags - data.n_tags,
            "untagged_interactions": raw.n_interactions - int((~data.inter_sampled).sum()),
            "users_without_tagged_interactions": raw.n_users - data.n_users,
        },
    }
