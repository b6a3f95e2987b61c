"""The canonical in-memory form every loader produces (DESIGN §3).

Loaders only parse; everything the protocol does (tag filtering, splits, sample expansion,
Shapley weights) works on this one structure, so a new data format is one new loader.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from training.data.ragged import Ragged


@dataclass
class Vocabulary:
    """Categorical values of one privileged field or user attribute."""

    names: list[str]

    def __len__(self) -> int:
        return len(self.names)


@dataclass
class RawDataset:
    """A loaded, not yet processed data set. All ids are dense 0-based indices.

    Interactions are user-item events. ``inter_tags`` is the interaction's *coalition*: the
    tags that user gave that item (HetRec) or the item's tags (MovieLens, synthetic).
    ``tag_counts[t]`` is how often tag ``t`` was seen in the source files: the basis of the
    min-count filter (tag applications for MovieLens, assignments for HetRec).
    """

    name: str
    tag_names: list[str]
    user_ids: list[str]
    item_ids: list[str]
    inter_user: np.ndarray  # int32 [N]
    inter_item: np.ndarray  # int32 [N]
    inter_label: np.ndarray  # int8 [N], 1 = positive
    inter_time: np.ndarray  # int64 [N], unix seconds
    inter_tags: Ragged  # [N] coalition per interaction, sorted unique tag ids
    item_tags: Ragged  # [I] the item's global tag set
    tag_counts: np.ndarray  # int64 [T]
    privileged: dict[str, tuple[Vocabulary, Ragged]] = field(default_factory=dict)
    """field name -> (vocabulary, values per item [I]); training-time-only item features."""
    user_attributes: dict[str, tuple[Vocabulary, np.ndarray]] = field(default_factory=dict)
    """attribute name -> (vocabulary, int32 value per user [U], -1 = unknown)."""
    explicit_negatives: bool = False
    """True when labels 0 come from the data (ratings < 4, unclicked impressions)."""
    truth: dict[str, np.ndarray] = field(default_factory=dict)
    """Planted ground truth of synthetic data (e.g. ``user_tag_affinity`` [U, T])."""

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_tags(self) -> int:
        return len(self.tag_names)

    @property
    def n_interactions(self) -> int:
        return len(self.inter_user)

    def validate(self) -> None:
        """Check the shapes and id ranges every consumer relies on."""
        n = self.n_interactions
        for name in ("inter_item", "inter_label", "inter_time"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} rows, expected {n}")
        if len(self.inter_tags) != n:
            raise ValueError(f"inter_tags has {len(self.inter_tags)} rows, expected {n}")
        if len(self.item_tags) != self.n_items:
            raise ValueError("item_tags must have one row per item")
        if len(self.tag_counts) != self.n_tags:
            raise ValueError("tag_counts must have one entry per tag")
        if n and (self.inter_user.min() < 0 or self.inter_user.max() >= self.n_users):
            raise ValueError("inter_user out of range")
        if n and (self.inter_item.min() < 0 or self.inter_item.max() >= self.n_items):
            raise ValueError("inter_item out of range")
        for tags in (self.inter_tags, self.item_tags):
            if len(tags.values) and (tags.values.min() < 0 or tags.values.max() >= self.n_tags):
                raise ValueError("tag id out of range")
        for fname, (vocab, values) in self.privileged.items():
            if len(values) != self.n_items:
                raise ValueError(f"privileged field {fname!r} must have one row per item")
            if len(values.values) and values.values.max() >= len(vocab):
                raise ValueError(f"privileged field {fname!r} has values outside its vocabulary")
        for aname, (vocab, values) in self.user_attributes.items():
            if len(values) != self.n_users:
                raise ValueError(f"user attribute {aname!r} must have one value per user")
            if len(values) and values.max() >= len(vocab):
                raise ValueError(f"user attribute {aname!r} has values outside its vocabulary")
