"""Loaders for the HetRec 2011 tagging sets (movielens-2k, delicious-2k, lastfm-2k).

An interaction is a distinct (user, item) pair and its coalition is the set of tags that user
gave that item (the grouping is :mod:`training.data.assignments`, shared with the MovieLens
tag-application loader); these loaders read the files and check the tag ids.

Each set ships its assignments twice: with a millisecond timestamp (``*-timestamps.dat``,
preferred) and with calendar fields (day, month, year[, hour, minute, second], read as UTC).
Files that only feed privileged fields (genres, directors, bookmarks) are optional: when one
is absent its field is still present, with an empty vocabulary and no values per item.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.data.assignments import Field, group_assignments
from training.data.errors import DataFormatError
from training.data.movielens import item_field
from training.data.ragged import Ragged
from training.data.raw import RawDataset, Vocabulary
from training.data.textio import Table, read_table

TAGS_FILE = "tags.dat"
_TIMESTAMP = ("timestamp", "unixTimeStamp")
_DATE = (("day", "date_day"), ("month", "date_month"), ("year", "date_year"))
_TIME_OF_DAY = (("hour", "date_hour"), ("minute", "date_minute"), ("second", "date_second"))

PrivilegedBuilder = Callable[[Path, np.ndarray], dict[str, Field]]


@dataclass(frozen=True)
class _Layout:
    """What differs between the three sets: names of the item column and files."""

    name: str
    item_column: str
    timestamps_file: str
    dates_file: str
    privileged: PrivilegedBuilder


@dataclass(frozen=True)
class _Assignments:
    """One row per tag assignment (user, item, tag, unix seconds), raw ids as in the file."""

    table: Table
    user: np.ndarray
    item: np.ndarray
    tag: np.ndarray
    time: np.ndarray


def load_hetrec_movielens(path: Path) -> RawDataset:
    """HetRec movielens-2k; privileged "genre" and "director" (the director id)."""
    return _load(Path(path), _MOVIELENS)


def load_hetrec_delicious(path: Path) -> RawDataset:
    """HetRec delicious-2k; privileged "url_principal" and "bookmark" (the bookmark id)."""
    return _load(Path(path), _DELICIOUS)


def load_hetrec_lastfm(path: Path) -> RawDataset:
    """HetRec lastfm-2k; privileged "artist" (the artist id)."""
    return _load(Path(path), _LASTFM)


def _load(path: Path, layout: _Layout) -> RawDataset:
    assignments = _read_assignments(path, layout)
    tag_ids, tag_names = _read_tag_names(path / TAGS_FILE)
    tag_raw, tag_index = np.unique(assignments.tag, return_inverse=True)
    return group_assignments(
        layout.name,
        assignments.user,
        assignments.item,
        tag_index,
        assignments.time,
        _tag_vocabulary(assignments, tag_raw, tag_ids, tag_names),
        lambda items: layout.privileged(path, items),
    )


def _read_assignments(path: Path, layout: _Layout) -> _Assignments:
    """The assignments file, preferring the millisecond timestamps over calendar fields."""
    ids = ("userID", layout.item_column, "tagID")
    if not (path / layout.timestamps_file).is_file() and not (path / layout.dates_file).is_file():
        raise DataFormatError(
            path / layout.timestamps_file,
            None,
            f"required file {layout.timestamps_file!r} (or {layout.dates_file!r}) "
            f"not found in {path}",
        )
    if (path / layout.timestamps_file).is_file():
        table = read_table(path / layout.timestamps_file, "\t", (*ids, _TIMESTAMP))
        time = table.ints(_TIMESTAMP[0]) // 1000  # floor, also for pre-1970 stamps
    else:
        table = read_table(path / layout.dates_file, "\t", (*ids, *_DATE), optional=_TIME_OF_DAY)
        time = _utc_seconds(table)
    if not len(table):
        raise DataFormatError(table.path, None, "no tag assignments after the header line")
    user, item, tag = (table.ints(name) for name in ids)
    return _Assignments(table, user, item, tag, time)


def _utc_seconds(table: Table) -> np.ndarray:
    """Unix seconds from calendar columns, each range-checked (no silent rollover)."""
    day, month, year = (table.ints(names[0]) for names in _DATE)
    hour, minute, second = (
        table.ints(names[0]) if table.has(names[0]) else np.zeros(len(table), np.int64)
        for names in _TIME_OF_DAY
    )
    _check_range(table, "year", year, 1, 9999)
    _check_range(table, "month", month, 1, 12)
    months = ((year - 1970) * 12 + month - 1).astype("datetime64[M]")
    first_day = months.astype("datetime64[D]").astype(np.int64)
    days_in_month = (months + 1).astype("datetime64[D]").astype(np.int64) - first_day
    _check_range(table, "day", day, 1, days_in_month)
    _check_range(table, "hour", hour, 0, 23)
    _check_range(table, "minute", minute, 0, 59)
    _check_range(table, "second", second, 0, 59)
    return (first_day + day - 1) * 86400 + hour * 3600 + minute * 60 + second


def _check_range(
    table: Table, column: str, values: np.ndarray, low: int, high: int | np.ndarray
) -> None:
    bad = np.flatnonzero((values < low) | (values > high))
    if len(bad):
        row = int(bad[0])
        raise table.error(row, f"column {column!r}: {int(values[row])} is out of range")


def _read_tag_names(path: Path) -> tuple[np.ndarray, list[str]]:
    """tags.dat as (sorted ids, names in the same order); a repeated id is an error."""
    table = read_table(path, "\t", (("id", "tagID"), ("value", "tagValue")))
    ids = table.ints("id")
    order = np.argsort(ids, kind="stable")
    repeated = np.flatnonzero(ids[order][1:] == ids[order][:-1])
    if len(repeated):
        row = int(order[repeated + 1].min())
        raise table.error(row, f"tag id {int(ids[row])} is defined twice")
    values = table.strings("value")
    return ids[order], [values[i] for i in order.tolist()]


def _tag_vocabulary(
    assignments: _Assignments, used: np.ndarray, known: np.ndarray, names: list[str]
) -> list[str]:
    """Names of the used tag ids (sorted by id); an id missing from tags.dat is an error."""
    position = np.searchsorted(known, used).clip(max=max(len(known) - 1, 0))
    found = known[position] == used if len(known) else np.zeros(len(used), dtype=bool)
    if not found.all():
        unknown = used[~found]
        row = int(np.flatnonzero(np.isin(assignments.tag, unknown))[0])
        raise assignments.table.error(
            row, f"tag id {int(assignments.tag[row])} is not defined in {TAGS_FILE}"
        )
    return [names[i] for i in position.tolist()]


def _optional_field(
    path: Path, id_column: str | tuple[str, ...], value_column: str, items: np.ndarray
) -> Field:
    """A categorical item field from an optional file; rows of unknown items are ignored."""
    if not path.is_file():
        return Vocabulary([]), Ragged.empty(len(items))
    table = read_table(path, "\t", (id_column, value_column))
    ids = table.ints(id_column if isinstance(id_column, str) else id_column[0])
    position = np.searchsorted(items, ids).clip(max=max(len(items) - 1, 0))
    values = table.strings(value_column)
    keep = [
        i
        for i, (hit, value) in enumerate(zip(items[position] == ids, values, strict=True))
        if hit and value.strip()
    ]
    return item_field(position[keep], [values[i].strip() for i in keep], len(items))


def _identity_field(items: np.ndarray) -> Field:
    """The item id itself as a privileged value (one value per item)."""
    n = len(items)
    offsets = np.arange(n + 1, dtype=np.int64)
    return Vocabulary([str(i) for i in items.tolist()]), Ragged(
        offsets, np.arange(n, dtype=np.int32)
    )


def _movielens_fields(path: Path, items: np.ndarray) -> dict[str, Field]:
    return {
        "genre": _optional_field(path / "movie_genres.dat", "movieID", "genre", items),
        "director": _optional_field(path / "movie_directors.dat", "movieID", "directorID", items),
    }


def _delicious_fields(path: Path, items: np.ndarray) -> dict[str, Field]:
    return {
        "url_principal": _optional_field(path / "bookmarks.dat", "id", "urlPrincipal", items),
        "bookmark": _identity_field(items),
    }


def _lastfm_fields(path: Path, items: np.ndarray) -> dict[str, Field]:
    return {"artist": _identity_field(items)}


_MOVIELENS = _Layout(
    "hetrec-movielens",
    "movieID",
    "user_taggedmovies-timestamps.dat",
    "user_taggedmovies.dat",
    _movielens_fields,
)
_DELICIOUS = _Layout(
    "hetrec-delicious",
    "bookmarkID",
    "user_taggedbookmarks-timestamps.dat",
    "user_taggedbookmarks.dat",
    _delicious_fields,
)
_LASTFM = _Layout(
    "hetrec-lastfm",
    "artistID",
    "user_taggedartists-timestamps.dat",
    "user_taggedartists.dat",
    _lastfm_fields,
)
