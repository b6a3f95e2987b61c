"""A minimal CSR-style ragged array: many small integer sets stored as two flat arrays.

Tag sets per item, coalitions per interaction and privileged values per item are all
"a short list of ids per row"; keeping them as (offsets, values) makes them cheap to
save in an ``.npz`` file and to process with vectorised numpy instead of Python lists.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Ragged:
    """Row ``i`` is ``values[offsets[i]:offsets[i + 1]]``."""

    offsets: np.ndarray  # int64 [n + 1], offsets[0] == 0, non-decreasing
    values: np.ndarray  # int32 [offsets[-1]]

    def __post_init__(self) -> None:
        if self.offsets.ndim != 1 or len(self.offsets) == 0 or self.offsets[0] != 0:
            raise ValueError("offsets must be a 1-D array starting at 0")
        if self.offsets[-1] != len(self.values):
            raise ValueError(
                f"offsets end at {self.offsets[-1]} but there are {len(self.values)} values"
            )

    @classmethod
    def from_lists(cls, rows: Iterable[Sequence[int]]) -> Ragged:
        rows = list(rows)
        lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        values = np.fromiter((v for r in rows for v in r), dtype=np.int32, count=int(offsets[-1]))
        return cls(offsets, values)

    @classmethod
    def from_pairs(cls, rows: np.ndarray, values: np.ndarray, n_rows: int) -> Ragged:
        """Group (row, value) pairs into rows; values within a row are sorted and unique."""
        rows = np.asarray(rows, dtype=np.int64)
        values = np.asarray(values, dtype=np.int64)
        if len(rows):
            span = int(values.max()) + 1
            key = np.unique(rows * span + values)
            rows, values = key // span, key % span
        counts = np.bincount(rows, minlength=n_rows).astype(np.int64)
        offsets = np.zeros(n_rows + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        return cls(offsets, values.astype(np.int32))

    @classmethod
    def empty(cls, n_rows: int) -> Ragged:
        return cls(np.zeros(n_rows + 1, dtype=np.int64), np.zeros(0, dtype=np.int32))

    def concat(self, other: Ragged) -> Ragged:
        """This array's rows followed by ``other``'s."""
        return Ragged(
            np.concatenate([self.offsets, other.offsets[1:] + self.offsets[-1]]),
            np.concatenate([self.values, other.values]),
        )

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        return self.values[self.offsets[i] : self.offsets[i + 1]]

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def row_ids(self) -> np.ndarray:
        """The row index of every value (the inverse of the offsets)."""
        return np.repeat(np.arange(len(self), dtype=np.int64), self.lengths())

    def value_positions(self, rows: np.ndarray) -> np.ndarray:
        """Indices into ``values`` of every value of the given rows, row after row."""
        rows = np.asarray(rows, dtype=np.int64)
        lengths = self.lengths()[rows]
        starts = np.repeat(self.offsets[rows], lengths)
        within = np.arange(int(lengths.sum()), dtype=np.int64) - np.repeat(
            np.cumsum(lengths) - lengths, lengths
        )
        return starts + within

    def to_lists(self) -> list[list[int]]:
        return [self[i].tolist() for i in range(len(self))]

    def take(self, rows: np.ndarray) -> Ragged:
        """A new ragged array made of the given rows, in the given order."""
        rows = np.asarray(rows, dtype=np.int64)
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(self.lengths()[rows], out=offsets[1:])
        return Ragged(offsets, self.values[self.value_positions(rows)])

    def map_values(self, mapping: np.ndarray) -> Ragged:
        """Replace every value v by ``mapping[v]``; values mapped to -1 are dropped."""
        mapped = mapping[self.values]
        keep = mapped >= 0
        rows = self.row_ids()[keep]
        counts = np.bincount(rows, minlength=len(self)).astype(np.int64)
        offsets = np.zeros(len(self) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        return Ragged(offsets, mapped[keep].astype(np.int32))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Ragged):
            return NotImplemented
        return np.array_equal(self.offsets, other.offsets) and np.array_equal(
            self.values, other.values
        )

    __hash__ = None  # type: ignore[assignment]
