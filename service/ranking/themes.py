"""The theme catalogue (the bundle's ``themes.json``) and theme ranking for one user.

A theme is a card grouping items by one to three tags ("Vintage style"). A user's score for
a theme is the theme's tag weights applied to the user's per-tag preference scores:
``score(theme) = Σ_t weight(theme, t) · scores[t]``, i.e. one row of ``W @ scores`` where
``W`` is the sparse ``[n_themes, n_tags]`` weight matrix.

Ranking has two paths that must agree exactly, since the HTTP layer may use either:

* retrieval over the whole catalogue: a faiss inner-product index (``IndexFlatIP``, exact)
  finds the best themes, optionally on a GPU; its float32 scores are only used to pick
  candidates, the returned themes are rescored exactly (float64) and ordered by
  (score descending, file order), with a guard that falls back to a full exact scan
  whenever float32 rounding could have changed which themes make the top k;
* re-ranking given candidate ids: the same exact scoring on just those themes.

The catalogue is validated strictly on load: a catalogue built for another tag vocabulary
would otherwise serve confidently wrong themes, so every problem is reported as a
:class:`ThemeCatalogueError` naming the file and the exact place
(``themes[3].tags[0].tag_id``).

This module must not import torch, onnx or anything from ``training``.
"""

from __future__ import annotations

import math
import numbers
import operator
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import faiss
import numpy as np
import orjson
import scipy.sparse

__all__ = [
    "SUPPORTED_FORMAT_VERSION",
    "RankedTheme",
    "Theme",
    "ThemeCatalogue",
    "ThemeCatalogueError",
    "ThemeTag",
    "UnknownThemesError",
]

SUPPORTED_FORMAT_VERSION = 1

_MARGIN = 16
"""Extra neighbours asked from faiss beyond k, so that near-ties at the k-th place are
resolved by the exact rescoring instead of by float32 rounding."""

_GPU_MAX_K = 2048
"""faiss GPU indexes refuse k above this; larger requests use the exact full scan."""

_REL_TOL = 1e-5
"""Bound on faiss's float32 error relative to Σ|w·s| (float32 rounding is ~6e-8 per
operation and a theme has a handful of tags, so this leaves a wide safety factor)."""


class ThemeCatalogueError(ValueError):
    """A theme catalogue that cannot be served, or a ranking request it cannot answer; the
    message names the source file and the exact place so the catalogue can be fixed."""


class UnknownThemesError(ThemeCatalogueError):
    """Candidate theme ids that are not in the catalogue; ``ids`` lists them (input order,
    no duplicates) so the HTTP layer can answer 422 naming them."""

    def __init__(self, source: str, ids: Sequence[str]) -> None:
        self.ids: list[str] = list(ids)
        shown = ", ".join(repr(theme_id) for theme_id in self.ids)
        super().__init__(f"{source}: unknown theme ids: {shown}")


@dataclass(frozen=True)
class Theme:
    """One theme card as stored in the catalogue (tags in file order)."""

    theme_id: str
    title: str
    tag_ids: tuple[int, ...]
    tag_names: tuple[str, ...]
    weights: tuple[float, ...]
    # Read-only view; excluded from the hash because mapping proxies are unhashable.
    stats: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}), hash=False)


@dataclass(frozen=True)
class ThemeTag:
    """One tag of a ranked theme, so the UI can explain the match ("because you like …")."""

    tag_id: int
    tag: str
    weight: float
    contribution: float


@dataclass(frozen=True)
class RankedTheme:
    """A theme scored for one user; ``tags`` are sorted by contribution, descending
    (ties: tag id), so the first tag is the main reason the theme was chosen."""

    theme_id: str
    title: str
    score: float
    tags: tuple[ThemeTag, ...]


# --------------------------------------------------------------------------- validation


def _json_type(value: Any) -> str:
    """JSON name of a value's type, for messages written for people editing JSON."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, numbers.Integral):
        return "integer"
    if isinstance(value, numbers.Real):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list | tuple):
        return "array"
    return type(value).__name__


def _is_int(value: Any) -> bool:
    """JSON integer: ``true`` is not an integer even though Python says bool is an int."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


class _Validator:
    """Turns a parsed ``themes.json`` into :class:`Theme` objects, failing at the first
    problem with its place."""

    def __init__(self, source: str, tags: Sequence[str]) -> None:
        self.source = source
        self.tags = tags

    def fail(self, place: str, problem: str) -> ThemeCatalogueError:
        return ThemeCatalogueError(f"{self.source}: {place}: {problem}")

    def catalogue(self, data: Any) -> list[Theme]:
        if not isinstance(data, Mapping):
            raise ThemeCatalogueError(
                f"{self.source}: top level: expected a JSON object, found {_json_type(data)}"
            )
        if "format_version" in data:
            version = data["format_version"]
            if not (_is_int(version) and version == SUPPORTED_FORMAT_VERSION):
                raise self.fail(
                    "format_version",
                    f"unsupported format version {version!r} "
                    f"(supported: {SUPPORTED_FORMAT_VERSION})",
                )
        if "n_tags" in data:
            n_tags = data["n_tags"]
            if not _is_int(n_tags):
                raise self.fail("n_tags", f"expected an integer, found {_json_type(n_tags)}")
            if n_tags != len(self.tags):
                raise self.fail(
                    "n_tags",
                    f"{n_tags} does not match the tag vocabulary ({len(self.tags)} tags); "
                    "the catalogue was built for another model",
                )
        if "themes" not in data:
            raise self.fail("themes", "missing")
        raw_themes = data["themes"]
        if not isinstance(raw_themes, list):
            raise self.fail("themes", f"expected an array, found {_json_type(raw_themes)}")
        themes: list[Theme] = []
        first_seen: dict[str, int] = {}
        for index, raw in enumerate(raw_themes):
            theme = self.theme(f"themes[{index}]", raw)
            if theme.theme_id in first_seen:
                raise self.fail(
                    f"themes[{index}].theme_id",
                    f"duplicate theme id {theme.theme_id!r} "
                    f"(first at themes[{first_seen[theme.theme_id]}])",
                )
            first_seen[theme.theme_id] = index
            themes.append(theme)
        return themes

    def theme(self, place: str, raw: Any) -> Theme:
        if not isinstance(raw, Mapping):
            raise self.fail(place, f"expected an object, found {_json_type(raw)}")
        theme_id = raw.get("theme_id")
        if not isinstance(theme_id, str) or not theme_id:
            found = "an empty string" if theme_id == "" else _json_type(theme_id)
            if "theme_id" not in raw:
                found = "nothing (missing)"
            raise self.fail(f"{place}.theme_id", f"expected a non-empty string, found {found}")
        if "title" not in raw:
            raise self.fail(f"{place}.title", "missing")
        title = raw["title"]
        if not isinstance(title, str):
            raise self.fail(f"{place}.title", f"expected a string, found {_json_type(title)}")
        if "tags" not in raw:
            raise self.fail(f"{place}.tags", "missing")
        raw_tags = raw["tags"]
        if not isinstance(raw_tags, list):
            raise self.fail(f"{place}.tags", f"expected an array, found {_json_type(raw_tags)}")
        if not raw_tags:
            raise self.fail(f"{place}.tags", "a theme needs at least one tag")
        tag_ids: list[int] = []
        weights: list[float] = []
        for index, raw_tag in enumerate(raw_tags):
            tag_place = f"{place}.tags[{index}]"
            tag_id, weight = self.tag(tag_place, raw_tag)
            if tag_id in tag_ids:
                raise self.fail(
                    f"{tag_place}.tag_id",
                    f"tag {tag_id} ({self.tags[tag_id]!r}) appears twice in this theme "
                    f"(also {place}.tags[{tag_ids.index(tag_id)}])",
                )
            tag_ids.append(tag_id)
            weights.append(weight)
        return Theme(
            theme_id=theme_id,
            title=title,
            tag_ids=tuple(tag_ids),
            tag_names=tuple(self.tags[tag_id] for tag_id in tag_ids),
            weights=tuple(weights),
            stats=self.stats(f"{place}.stats", raw.get("stats")),
        )

    def tag(self, place: str, raw: Any) -> tuple[int, float]:
        if not isinstance(raw, Mapping):
            raise self.fail(place, f"expected an object, found {_json_type(raw)}")
        if "tag_id" not in raw:
            raise self.fail(f"{place}.tag_id", "missing")
        tag_id = raw["tag_id"]
        if not _is_int(tag_id):
            raise self.fail(f"{place}.tag_id", f"expected an integer, found {_json_type(tag_id)}")
        if not 0 <= tag_id < len(self.tags):
            raise self.fail(
                f"{place}.tag_id",
                f"{tag_id} is not a tag id (vocabulary has {len(self.tags)} tags)",
            )
        tag_id = int(tag_id)
        if "tag" in raw and raw["tag"] != self.tags[tag_id]:
            raise self.fail(
                f"{place}.tag",
                f"{raw['tag']!r} does not match the vocabulary's tag {tag_id} "
                f"({self.tags[tag_id]!r}); was the catalogue built for another vocabulary?",
            )
        if "weight" not in raw:
            raise self.fail(f"{place}.weight", "missing")
        weight = raw["weight"]
        if not _is_number(weight):
            raise self.fail(f"{place}.weight", f"expected a number, found {_json_type(weight)}")
        weight = float(weight)
        if not math.isfinite(weight) or weight < 0:
            raise self.fail(f"{place}.weight", f"{weight!r} is not a finite number >= 0")
        return tag_id, weight

    def stats(self, place: str, raw: Any) -> Mapping[str, float]:
        if raw is None:
            return MappingProxyType({})
        if not isinstance(raw, Mapping):
            raise self.fail(place, f"expected an object, found {_json_type(raw)}")
        stats: dict[str, float] = {}
        for key, value in raw.items():
            if not _is_number(value) or not math.isfinite(value):
                found = repr(value) if _is_number(value) else _json_type(value)
                raise self.fail(f"{place}.{key}", f"expected a finite number, found {found}")
            stats[str(key)] = value
        return MappingProxyType(stats)


# --------------------------------------------------------------------------- GPU


def _gpu_count() -> int:
    """GPUs faiss can use; 0 for CPU-only faiss builds, which lack the GPU symbols."""
    if not (hasattr(faiss, "StandardGpuResources") and hasattr(faiss, "index_cpu_to_gpu")):
        return 0
    get_num_gpus = getattr(faiss, "get_num_gpus", None)
    return int(get_num_gpus()) if get_num_gpus is not None else 0


# --------------------------------------------------------------------------- catalogue


class ThemeCatalogue:
    """Validated themes plus the structures to rank them for a user's tag scores.

    Immutable after construction and safe for concurrent ``rank`` calls: the faiss index is
    built in the constructor, CPU flat-index searches are read-only, and GPU searches are
    serialised by a lock.
    """

    def __init__(
        self,
        themes: Sequence[Theme],
        n_tags: int,
        *,
        source: str = "themes.json",
        use_gpu: bool | None = None,
    ) -> None:
        """Build from already validated themes; use :meth:`from_dict` or :meth:`load` for
        untrusted input (they report problems with their place in the file)."""
        self._source = source
        self._n_tags = int(n_tags)
        self._themes: tuple[Theme, ...] = tuple(themes)
        self._position: dict[str, int] = {}
        for position, theme in enumerate(self._themes):
            if theme.theme_id in self._position:
                raise ThemeCatalogueError(f"{source}: duplicate theme id {theme.theme_id!r}")
            if not theme.tag_ids or not (
                len(theme.tag_ids) == len(theme.weights) == len(theme.tag_names)
            ):
                raise ThemeCatalogueError(f"{source}: theme {theme.theme_id!r} is malformed")
            if any(not 0 <= tag_id < self._n_tags for tag_id in theme.tag_ids):
                raise ThemeCatalogueError(
                    f"{source}: theme {theme.theme_id!r} has a tag id outside 0..{n_tags - 1}"
                )
            self._position[theme.theme_id] = position
        self._ids = tuple(theme.theme_id for theme in self._themes)
        self._popular_order: dict[str, list[int]] = {}  # stats key -> positions, best first

        # Exact scoring: tags padded to the longest theme (padding has weight 0, which adds
        # exactly 0.0), accumulated tag by tag in file order. Each theme's score is thus the
        # same float64 value whichever rows are scored together, and it equals the
        # sequential sum of its ThemeTag contributions.
        n_themes = len(self._themes)
        width = max((len(theme.tag_ids) for theme in self._themes), default=1)
        self._pad_ids = np.zeros((n_themes, width), dtype=np.int64)
        self._pad_weights = np.zeros((n_themes, width), dtype=np.float64)
        for position, theme in enumerate(self._themes):
            self._pad_ids[position, : len(theme.tag_ids)] = theme.tag_ids
            self._pad_weights[position, : len(theme.weights)] = theme.weights
        self._pad_ids.setflags(write=False)
        self._pad_weights.setflags(write=False)
        self._max_weight_sum = float(np.abs(self._pad_weights).sum(axis=1).max(initial=0.0))

        indptr = np.zeros(n_themes + 1, dtype=np.int64)
        indptr[1:] = np.cumsum([len(theme.tag_ids) for theme in self._themes])
        indices = np.fromiter(
            (tag_id for theme in self._themes for tag_id in theme.tag_ids),
            dtype=np.int64,
            count=int(indptr[-1]),
        )
        data = np.fromiter(
            (weight for theme in self._themes for weight in theme.weights),
            dtype=np.float32,
            count=int(indptr[-1]),
        )
        self._matrix = scipy.sparse.csr_matrix(
            (data, indices, indptr), shape=(n_themes, self._n_tags), dtype=np.float32
        )

        gpus = _gpu_count()
        if use_gpu and gpus == 0:
            build = (
                "faiss was built with GPU support but sees no GPU"
                if hasattr(faiss, "StandardGpuResources")
                else "this faiss build is CPU-only"
            )
            raise ThemeCatalogueError(
                f"{source}: use_gpu=True but no GPU is available ({build}); "
                "pass use_gpu=False or None for the CPU index"
            )
        want_gpu = gpus > 0 if use_gpu is None else bool(use_gpu)
        self._lock = threading.Lock()
        self._gpu_resources: Any = None
        self._index: Any = None
        self._on_gpu = False
        if n_themes > 0:
            index = faiss.IndexFlatIP(self._n_tags)
            index.add(np.ascontiguousarray(self._matrix.toarray(), dtype=np.float32))
            if want_gpu:
                self._gpu_resources = faiss.StandardGpuResources()
                index = faiss.index_cpu_to_gpu(self._gpu_resources, 0, index)
                self._on_gpu = True
            self._index = index

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_dict(
        cls,
        data: Any,
        tags: Sequence[str],
        *,
        source: str = "themes.json",
        use_gpu: bool | None = None,
    ) -> ThemeCatalogue:
        """Validate a parsed ``themes.json`` against the model's tag vocabulary ``tags``;
        ``source`` names the file in error messages."""
        vocabulary = tuple(tags)
        themes = _Validator(source, vocabulary).catalogue(data)
        return cls(themes, len(vocabulary), source=source, use_gpu=use_gpu)

    @classmethod
    def load(
        cls, path: str | Path, tags: Sequence[str], *, use_gpu: bool | None = None
    ) -> ThemeCatalogue:
        """Read and validate ``themes.json``; I/O errors (missing file) propagate as
        ``OSError``, invalid JSON or content as :class:`ThemeCatalogueError`."""
        source = str(path)
        raw = Path(path).read_bytes()
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ThemeCatalogueError(f"{source}: not valid JSON: {exc}") from exc
        return cls.from_dict(data, tags, source=source, use_gpu=use_gpu)

    # ------------------------------------------------------------------ lookup

    def __len__(self) -> int:
        return len(self._themes)

    def __repr__(self) -> str:
        return (
            f"ThemeCatalogue({self._source!r}, themes={len(self)}, n_tags={self._n_tags}, "
            f"on_gpu={self._on_gpu})"
        )

    @property
    def source(self) -> str:
        """Where the catalogue came from, as used in error messages."""
        return self._source

    @property
    def n_tags(self) -> int:
        """Size of the tag vocabulary the catalogue was validated against."""
        return self._n_tags

    @property
    def ids(self) -> tuple[str, ...]:
        """Theme ids in file order (the tie-break order of every ranking)."""
        return self._ids

    @property
    def themes(self) -> tuple[Theme, ...]:
        """All themes in file order."""
        return self._themes

    def get(self, theme_id: str) -> Theme | None:
        """The theme with this id, or None."""
        position = self._position.get(theme_id)
        return None if position is None else self._themes[position]

    def unknown(self, theme_ids: Sequence[str]) -> list[str]:
        """Ids that are not in the catalogue, in input order without duplicates, so a
        request can be refused naming all of them at once."""
        _reject_bare_string(theme_ids)
        missing: dict[str, None] = {}
        for theme_id in theme_ids:
            if theme_id not in self._position:
                missing.setdefault(theme_id, None)
        return list(missing)

    @property
    def matrix(self) -> scipy.sparse.csr_matrix:
        """The ``[n_themes, n_tags]`` float32 weight matrix (a copy: the catalogue's own
        scoring structures cannot be changed through it)."""
        return self._matrix.copy()

    @property
    def on_gpu(self) -> bool:
        """Whether the faiss index lives on a GPU."""
        return self._on_gpu

    # ------------------------------------------------------------------ ranking

    def rank(
        self, scores: np.ndarray, k: int, candidates: Sequence[str] | None = None
    ) -> list[RankedTheme]:
        """The ``k`` best themes for one user's tag ``scores`` (length ``n_tags``), by score
        descending then file order; over the whole catalogue, or only over ``candidates``
        (duplicates collapsed) when given. Unknown candidates raise
        :class:`UnknownThemesError`."""
        k = _check_k(k)
        s32 = self._check_scores(scores, ndim=1)
        s64 = s32.astype(np.float64)
        if candidates is not None:
            _reject_bare_string(candidates)
            unknown = self.unknown(candidates)
            if unknown:
                raise UnknownThemesError(self._source, unknown)
            positions = np.fromiter(
                dict.fromkeys(self._position[theme_id] for theme_id in candidates),
                dtype=np.int64,
            )
            return self._ranked(positions, self._exact(positions, s64), s64, k)
        if self._index is None:
            return []
        return self._retrieve(s32[None, :], k)[0]

    def rank_batch(self, scores: np.ndarray, k: int) -> list[list[RankedTheme]]:
        """:meth:`rank` over the whole catalogue for each row of ``scores``
        (``[batch, n_tags]``), with a single faiss search for all rows."""
        k = _check_k(k)
        s32 = self._check_scores(scores, ndim=2)
        if self._index is None:
            return [[] for _ in range(s32.shape[0])]
        if s32.shape[0] == 0:
            return []
        return self._retrieve(s32, k)

    def popular(self, k: int, by: str = "ctr") -> list[Theme]:
        """The control ranking for A/B tests: the ``k`` themes with the highest ``stats[by]``
        (ties: file order); themes lacking that statistic come last, in file order."""
        k = _check_k(k)
        order = self._popular_order.get(by)
        if order is None:  # sorted once per statistic: the control arm asks on every request

            def key(position: int) -> tuple[int, float, int]:
                value = self._themes[position].stats.get(by)
                return (1, 0.0, position) if value is None else (0, -float(value), position)

            order = self._popular_order[by] = sorted(range(len(self._themes)), key=key)
        return [self._themes[position] for position in order[:k]]

    # ------------------------------------------------------------------ internals

    def _check_scores(self, scores: np.ndarray, *, ndim: int) -> np.ndarray:
        """Scores as a contiguous float32 array (the model's dtype, and what faiss gets);
        both ranking paths score these same values."""
        array = np.asarray(scores)
        if array.dtype.kind not in "fiu":
            raise ValueError(f"scores must be real numbers, found dtype {array.dtype}")
        shape = "(n_tags,)" if ndim == 1 else "(batch, n_tags)"
        if array.ndim != ndim or array.shape[-1] != self._n_tags:
            raise ValueError(
                f"scores must have shape {shape} with n_tags={self._n_tags}, found {array.shape}"
            )
        array = np.ascontiguousarray(array, dtype=np.float32)
        if not np.isfinite(array).all():
            raise ValueError("scores must be finite (float32)")
        return array

    def _exact(self, positions: np.ndarray, s64: np.ndarray) -> np.ndarray:
        """Exact float64 scores of the themes at ``positions``; per theme the result does not
        depend on which other themes are scored with it."""
        ids = self._pad_ids[positions]
        weights = self._pad_weights[positions]
        total = weights[:, 0] * s64[ids[:, 0]]
        for column in range(1, ids.shape[1]):
            total = total + weights[:, column] * s64[ids[:, column]]
        return total

    def _retrieve(self, s32: np.ndarray, k: int) -> list[list[RankedTheme]]:
        """Whole-catalogue top k per row: faiss proposes ``k + margin`` themes, exact scores
        order them. If float32 error could have left a top-k theme out (faiss's last
        proposal within tolerance of its k-th), that row is scored exactly over the whole
        catalogue instead, so the result always equals the exact full ranking."""
        n_themes = len(self._themes)
        k = min(k, n_themes)
        wanted = min(n_themes, k + _MARGIN)
        everything = np.arange(n_themes, dtype=np.int64)
        if self._on_gpu and wanted > _GPU_MAX_K:
            proposed_scores, proposed = None, None
        elif self._on_gpu:
            with self._lock:
                proposed_scores, proposed = self._index.search(s32, wanted)
        else:
            proposed_scores, proposed = self._index.search(s32, wanted)

        results: list[list[RankedTheme]] = []
        for row in range(s32.shape[0]):
            s64 = s32[row].astype(np.float64)
            positions = everything
            if proposed is not None and proposed_scores is not None:
                row_positions = proposed[row]
                row_scores = proposed_scores[row]
                tolerance = 2.0 * _REL_TOL * self._max_weight_sum * float(np.abs(s64).max())
                exhaustive = wanted == n_themes
                clear_cut = bool(row_scores[wanted - 1] < row_scores[k - 1] - tolerance)
                if (exhaustive or clear_cut) and (row_positions >= 0).all():
                    positions = row_positions.astype(np.int64)
            results.append(self._ranked(positions, self._exact(positions, s64), s64, k))
        return results

    def _ranked(
        self, positions: np.ndarray, exact: np.ndarray, s64: np.ndarray, k: int
    ) -> list[RankedTheme]:
        """The top ``k`` of ``positions`` by (exact score descending, file order)."""
        order = np.lexsort((positions, -exact))[:k]
        ranked = []
        for index in order:
            theme = self._themes[int(positions[index])]
            tags = sorted(
                (
                    ThemeTag(
                        tag_id=tag_id,
                        tag=name,
                        weight=weight,
                        contribution=weight * float(s64[tag_id]),
                    )
                    for tag_id, name, weight in zip(
                        theme.tag_ids, theme.tag_names, theme.weights, strict=True
                    )
                ),
                key=lambda tag: (-tag.contribution, tag.tag_id),
            )
            ranked.append(
                RankedTheme(
                    theme_id=theme.theme_id,
                    title=theme.title,
                    score=float(exact[index]),
                    tags=tuple(tags),
                )
            )
        return ranked


def _check_k(k: int) -> int:
    """k as a positive int; bools and floats are refused rather than silently truncated."""
    if isinstance(k, bool):
        raise ValueError(f"k must be an integer >= 1, found {k!r}")
    try:
        value = operator.index(k)
    except TypeError:
        raise ValueError(f"k must be an integer >= 1, found {k!r}") from None
    if value < 1:
        raise ValueError(f"k must be an integer >= 1, found {value}")
    return value


def _reject_bare_string(theme_ids: Any) -> None:
    """A bare string is a Sequence[str] of characters; refuse it instead of treating each
    character as a theme id."""
    if isinstance(theme_ids, str | bytes):
        raise TypeError("theme ids must be a sequence of strings, not a single string")
