"""The processed data set that ``prepare`` writes and every model reads.

On disk (one directory):

- ``dataset.npz``: all arrays (byte-reproducible, see ``npzio``);
- ``vocab.json``: tag names, user and item ids, privileged and attribute vocabularies;
- ``meta.json``: the data set, its family and every protocol parameter used;
- ``stats.json``: counts for people (users, items, tags, splits, samples, positives ...).

Interactions are stored sorted by (user, time); user ``u`` owns rows
``user_offsets[u]:user_offsets[u + 1]``, of which those before ``user_cut[u]`` are its
*history* (user features) and the rest its *samples* (training targets, or evaluation truth
for test users). Per-(interaction, tag) arrays (``phi_*``, ``sve_weight``) are aligned with
``inter_tags.values``; expanding a sample interaction into single-tag samples is reading
its row of ``inter_tags``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from training.data.npzio import load_npz, save_npz
from training.data.ragged import Ragged

FORMAT_VERSION = 1
SPLITS = ("train", "valid", "test")
TRAIN, VALID, TEST = range(3)


@dataclass
class SingleTagSamples:
    """User-tag samples of a set of users: one row per (sample interaction, tag)."""

    user: np.ndarray  # int32
    item: np.ndarray  # int32
    tag: np.ndarray  # int32
    label: np.ndarray  # int8
    weight: np.ndarray  # float32 SVE gradient weight (1 for negatives)
    interaction: np.ndarray  # int64 index of the source interaction
    position: np.ndarray  # int64 index into inter_tags.values (and phi_*, sve_weight)

    def __len__(self) -> int:
        return len(self.user)


@dataclass
class ProcessedDataset:
    meta: dict[str, Any]
    tag_names: list[str]
    tag_counts: np.ndarray  # int64 [T]
    user_ids: list[str]
    item_ids: list[str]
    item_tags: Ragged  # [I]
    privileged_names: dict[str, list[str]]  # field -> vocabulary (index 0 = "others")
    item_privileged: dict[str, Ragged]  # field -> values per item [I]
    attribute_names: dict[str, list[str]]
    user_attributes: dict[str, np.ndarray]  # name -> int32 [U], -1 = unknown
    user_split: np.ndarray  # int8 [U]: 0 train, 1 valid, 2 test
    user_offsets: np.ndarray  # int64 [U + 1]
    user_cut: np.ndarray  # int64 [U]: first sample row of each user
    inter_item: np.ndarray  # int32 [N]
    inter_label: np.ndarray  # int8 [N]
    inter_time: np.ndarray  # int64 [N]
    inter_sampled: np.ndarray  # bool [N]: negative drawn by the protocol, not observed
    inter_tags: Ragged  # [N] coalitions
    phi_contains: np.ndarray  # float32 [nnz(inter_tags)]
    phi_covers: np.ndarray  # float32 [nnz(inter_tags)]
    sve_weight: np.ndarray  # float32 [nnz(inter_tags)], at meta["tau"], meta["credit"]
    raw_index: dict[str, np.ndarray] = field(default_factory=dict)
    """"user" / "item" / "tag" -> index in the loaded RawDataset (to relate ``truth``)."""
    truth: dict[str, np.ndarray] = field(default_factory=dict)
    """Planted ground truth of synthetic data, indexed like the RawDataset."""

    # ----------------------------------------------------------------- derived views
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
    def inter_user(self) -> np.ndarray:
        return np.repeat(np.arange(self.n_users, dtype=np.int32), np.diff(self.user_offsets))

    @property
    def inter_is_sample(self) -> np.ndarray:
        """True for sample rows (the chronologically last part of each user's log)."""
        position = np.arange(len(self.inter_item)) - np.repeat(
            self.user_offsets[:-1], np.diff(self.user_offsets)
        )
        cut_in_user = np.repeat(self.user_cut - self.user_offsets[:-1], np.diff(self.user_offsets))
        return position >= cut_in_user

    def users_in(self, *splits: str) -> np.ndarray:
        codes = [SPLITS.index(s) for s in splits]
        return np.flatnonzero(np.isin(self.user_split, codes)).astype(np.int32)

    def history(self, user: int) -> slice:
        return slice(int(self.user_offsets[user]), int(self.user_cut[user]))

    def samples_of(self, user: int) -> slice:
        return slice(int(self.user_cut[user]), int(self.user_offsets[user + 1]))

    def single_tag_samples(self, *splits: str) -> SingleTagSamples:
        """Expand the sample interactions of users in ``splits`` into single-tag samples."""
        users = self.inter_user
        chosen = self.inter_is_sample & np.isin(
            self.user_split[users], [SPLITS.index(s) for s in splits]
        )
        interactions = np.flatnonzero(chosen)
        value_index = self.inter_tags.value_positions(interactions)
        source = np.repeat(interactions, self.inter_tags.lengths()[interactions])
        return SingleTagSamples(
            user=users[source],
            item=self.inter_item[source],
            tag=self.inter_tags.values[value_index],
            label=self.inter_label[source],
            weight=self.sve_weight[value_index],
            interaction=source,
            position=value_index,
        )

    # ----------------------------------------------------------------- persistence
    def save(self, out: Path, stats: dict[str, Any]) -> None:
        out.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {
            "tag_counts": self.tag_counts,
            "item_tags.offsets": self.item_tags.offsets,
            "item_tags.values": self.item_tags.values,
            "user_split": self.user_split,
            "user_offsets": self.user_offsets,
            "user_cut": self.user_cut,
            "inter_item": self.inter_item,
            "inter_label": self.inter_label,
            "inter_time": self.inter_time,
            "inter_sampled": self.inter_sampled,
            "inter_tags.offsets": self.inter_tags.offsets,
            "inter_tags.values": self.inter_tags.values,
            "phi_contains": self.phi_contains,
            "phi_covers": self.phi_covers,
            "sve_weight": self.sve_weight,
        }
        for name, ragged in self.item_privileged.items():
            arrays[f"privileged.{name}.offsets"] = ragged.offsets
            arrays[f"privileged.{name}.values"] = ragged.values
        for name, values in self.user_attributes.items():
            arrays[f"attribute.{name}"] = values
        for prefix, group in (("raw_index", self.raw_index), ("truth", self.truth)):
            for name, values in group.items():
                arrays[f"{prefix}.{name}"] = values
        save_npz(out / "dataset.npz", arrays)
        vocab = {
            "tags": self.tag_names,
            "users": self.user_ids,
            "items": self.item_ids,
            "privileged": self.privileged_names,
            "attributes": self.attribute_names,
        }
        _write_json(out / "vocab.json", vocab)
        _write_json(out / "meta.json", {**self.meta, "format_version": FORMAT_VERSION})
        _write_json(out / "stats.json", stats)

    @classmethod
    def load(cls, path: Path) -> ProcessedDataset:
        path = Path(path)
        for name in ("dataset.npz", "vocab.json", "meta.json"):
            if not (path / name).is_file():
                raise FileNotFoundError(
                    f"{path / name} is missing: is {path} a directory written by "
                    "`python -m training prepare`?"
                )
        meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{path / 'meta.json'}: format_version {meta.get('format_version')} is not "
                f"{FORMAT_VERSION}; run `python -m training prepare` again"
            )
        vocab = json.loads((path / "vocab.json").read_text(encoding="utf-8"))
        a = load_npz(path / "dataset.npz")

        def ragged(prefix: str) -> Ragged:
            return Ragged(a[f"{prefix}.offsets"], a[f"{prefix}.values"])

        return cls(
            meta=meta,
            tag_names=vocab["tags"],
            tag_counts=a["tag_counts"],
            user_ids=vocab["users"],
            item_ids=vocab["items"],
            item_tags=ragged("item_tags"),
            privileged_names=vocab["privileged"],
            item_privileged={f: ragged(f"privileged.{f}") for f in vocab["privileged"]},
            attribute_names=vocab["attributes"],
            user_attributes={n: a[f"attribute.{n}"] for n in vocab["attributes"]},
            user_split=a["user_split"],
            user_offsets=a["user_offsets"],
            user_cut=a["user_cut"],
            inter_item=a["inter_item"],
            inter_label=a["inter_label"],
            inter_time=a["inter_time"],
            inter_sampled=a["inter_sampled"],
            inter_tags=ragged("inter_tags"),
            phi_contains=a["phi_contains"],
            phi_covers=a["phi_covers"],
            sve_weight=a["sve_weight"],
            raw_index=_group(a, "raw_index."),
            truth=_group(a, "truth."),
        )


def _group(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k.removeprefix(prefix): v for k, v in arrays.items() if k.startswith(prefix)}


def _write_json(path: Path, payload: Any) -> None:
    text = json.dumps(payload, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
