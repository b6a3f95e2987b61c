"""User feature records: validation against a bundle's input spec, and batching into ONNX
feeds.

A record is what ``users.jsonl`` holds under ``features`` and what
``PUT /users/{id}/features`` takes: for each bag input of the model (``hist_tags``,
``hist_<field>``) a list of ids and, under ``<name>_w``, their weights; plus
``attributes`` (one value id + 1 per attribute, 0 = unknown) when the model has any.
Weights are normalised to sum to 1, as training builds them. Records are validated once
on the way in (every problem names its field and position) and again cheaply before
scoring, since a record written for another vocabulary must never reach onnxruntime with
an out-of-range id.

Ids only mean something in the vocabulary they were written for: tag 17 of one model is
another tag, or none, in a model trained on other data, and ids that merely fall inside
the other model's range would be scored as if they meant the same. So a validated record
carries the fingerprint of its model's vocabularies (``_vocabulary``), and a record is
scored only by a model with the same fingerprint.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from service.model.bundle import Manifest

Record = dict[str, Any]
"""A validated record: every input name of the model maps to a list (bags may be empty),
and ``_vocabulary`` to the fingerprint of the vocabularies the ids belong to."""

ATTRIBUTES = "attributes"
VOCABULARY = "_vocabulary"
"""Record key of the vocabulary fingerprint (never a model input)."""


def vocabulary_fingerprint(manifest: Manifest) -> str:
    """What a record's ids mean: a hash of the tag, privileged and attribute vocabularies."""
    vocabularies = {
        "tags": list(manifest.tags),
        "privileged": {field: list(values) for field, values in manifest.privileged.items()},
        "attributes": {field: list(values) for field, values in manifest.attributes.items()},
    }
    return hashlib.sha256(orjson.dumps(vocabularies, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


class FeatureError(ValueError):
    """A record that does not fit the model; ``field`` names the offending key."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


@dataclass(frozen=True)
class Bag:
    """One bag input pair: ids (``name``) and weights (``name_w``) over a vocabulary."""

    name: str
    weights_name: str
    vocabulary: int
    max_len: int


@dataclass(frozen=True)
class FeatureSpec:
    """What a model's ONNX inputs expect, read from its manifest."""

    bags: tuple[Bag, ...]
    attribute_sizes: tuple[int, ...]  # per attribute: number of values + 1 (0 = unknown)
    has_attributes: bool
    vocabulary: str = ""  # fingerprint of the vocabularies (see the module docstring)

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> FeatureSpec:
        by_name = {spec.name: spec for spec in manifest.inputs}
        bags = []
        for spec in manifest.inputs:
            if spec.role != "ids" or spec.name == ATTRIBUTES:
                continue
            vocabulary = (
                len(manifest.tags)
                if spec.feature == "tags"
                else len(manifest.privileged.get(spec.feature, ()))
            )
            weights = f"{spec.name}_w"
            if weights not in by_name:
                raise ValueError(f"input {spec.name!r} has no weights input {weights!r}")
            bags.append(Bag(spec.name, weights, vocabulary, manifest.max_history))
        sizes = tuple(len(values) + 1 for values in manifest.attributes.values())
        return cls(tuple(bags), sizes, ATTRIBUTES in by_name, vocabulary_fingerprint(manifest))

    @property
    def names(self) -> tuple[str, ...]:
        """Every key of a record, in input order."""
        names = [name for bag in self.bags for name in (bag.name, bag.weights_name)]
        return (*names, ATTRIBUTES) if self.has_attributes else tuple(names)

    def empty(self) -> Record:
        """The record of a user without any history (the cold-start input)."""
        record: Record = {name: [] for name in self.names}
        if self.has_attributes:
            record[ATTRIBUTES] = [0] * len(self.attribute_sizes)
        record[VOCABULARY] = self.vocabulary
        return record

    # ------------------------------------------------------------------ validation
    def validate(self, features: Any, where: str = "features") -> Record:
        """A clean record from client or file input; raises :class:`FeatureError`."""
        if not isinstance(features, Mapping):
            raise FeatureError(where, f"expected an object, found {type(features).__name__}")
        known = set(self.names)
        if not self.has_attributes and features.get(ATTRIBUTES) == []:
            known.add(ATTRIBUTES)  # "no attributes", as export writes for data without any
        unknown = sorted(str(key) for key in features if key not in known)
        if unknown:
            raise FeatureError(
                f"{where}.{unknown[0]}", f"unknown feature (this model takes {list(self.names)})"
            )
        record = self.empty()
        for bag in self.bags:
            ids = _int_list(features.get(bag.name, []), f"{where}.{bag.name}")
            if len(ids) > bag.max_len:
                raise FeatureError(
                    f"{where}.{bag.name}", f"at most {bag.max_len} ids, found {len(ids)}"
                )
            for i, value in enumerate(ids):
                if not 0 <= value < bag.vocabulary:
                    raise FeatureError(
                        f"{where}.{bag.name}[{i}]",
                        f"{value} is not an id of this model (0..{bag.vocabulary - 1})",
                    )
            if len(set(ids)) != len(ids):
                raise FeatureError(f"{where}.{bag.name}", "ids must be distinct")
            weights_field = f"{where}.{bag.weights_name}"
            raw = features.get(bag.weights_name)
            weights = [1.0] * len(ids) if raw is None else _weight_list(raw, weights_field)
            if len(weights) != len(ids):
                raise FeatureError(
                    weights_field,
                    f"expected {len(ids)} weights (one per id of {bag.name}), found {len(weights)}",
                )
            total = _finite_sum(weights)
            if total is None:
                raise FeatureError(weights_field, "weights must sum to a finite number")
            if ids and total <= 0:
                raise FeatureError(weights_field, "weights must not all be 0")
            record[bag.name] = ids
            record[bag.weights_name] = [w / total for w in weights] if ids else []
        if self.has_attributes:
            field = f"{where}.{ATTRIBUTES}"
            values = _int_list(features.get(ATTRIBUTES, record[ATTRIBUTES]), field)
            if len(values) != len(self.attribute_sizes):
                raise FeatureError(
                    field, f"expected {len(self.attribute_sizes)} values, found {len(values)}"
                )
            for i, (value, size) in enumerate(zip(values, self.attribute_sizes, strict=True)):
                if not 0 <= value < size:
                    raise FeatureError(f"{field}[{i}]", f"{value} is out of range 0..{size - 1}")
            record[ATTRIBUTES] = values
        return record

    def fits(self, record: Mapping[str, Sequence[Any]]) -> bool:
        """Cheap re-check of a stored record before it is scored: written for this
        model's vocabularies, ids in range, lengths consistent."""
        if record.get(VOCABULARY) != self.vocabulary:
            return False
        try:
            for bag in self.bags:
                ids, weights = record[bag.name], record[bag.weights_name]
                if len(ids) != len(weights) or len(ids) > bag.max_len:
                    return False
                if ids and not (min(ids) >= 0 and max(ids) < bag.vocabulary):
                    return False
            if self.has_attributes:
                values = record[ATTRIBUTES]
                if len(values) != len(self.attribute_sizes):
                    return False
                if any(not 0 <= v < s for v, s in zip(values, self.attribute_sizes, strict=True)):
                    return False
        except (KeyError, TypeError, ValueError):
            return False
        return True

    # ------------------------------------------------------------------ batching
    def encode(self, records: Sequence[Mapping[str, Sequence[Any]]]) -> dict[str, np.ndarray]:
        """ONNX feeds for a batch: bags padded (id 0, weight 0) to the batch's longest."""
        n = len(records)
        feeds: dict[str, np.ndarray] = {}
        for bag in self.bags:
            width = max(1, max((len(r[bag.name]) for r in records), default=1))
            ids = np.zeros((n, width), dtype=np.int64)
            weights = np.zeros((n, width), dtype=np.float32)
            for row, record in enumerate(records):
                length = len(record[bag.name])
                if length:
                    ids[row, :length] = record[bag.name]
                    weights[row, :length] = record[bag.weights_name]
            feeds[bag.name] = ids
            feeds[bag.weights_name] = weights
        if self.has_attributes:
            width = len(self.attribute_sizes)
            feeds[ATTRIBUTES] = np.array([r[ATTRIBUTES] for r in records], dtype=np.int64).reshape(
                n, width
            )
        return feeds


def _finite_sum(weights: list[float]) -> float | None:
    """The exact sum, or None where it overflows (``[1e308, 1e308]``)."""
    try:
        total = math.fsum(weights)
    except OverflowError:
        return None
    return total if math.isfinite(total) else None


def _int_list(value: Any, field: str) -> list[int]:
    if not isinstance(value, list):
        raise FeatureError(field, f"expected a list of integers, found {type(value).__name__}")
    for i, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, int):
            raise FeatureError(f"{field}[{i}]", f"expected an integer, found {item!r}")
    return list(value)


def _weight_list(value: Any, field: str) -> list[float]:
    if not isinstance(value, list):
        raise FeatureError(field, f"expected a list of numbers, found {type(value).__name__}")
    weights = []
    for i, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, int | float):
            raise FeatureError(f"{field}[{i}]", f"expected a number, found {item!r}")
        if not (math.isfinite(item) and item >= 0):
            raise FeatureError(f"{field}[{i}]", f"expected a finite number >= 0, found {item!r}")
        weights.append(float(item))
    return weights
