"""Loader for the MovieLens CSV layout (ml-latest-small, ml-20m, ml-25m).

Interactions are ratings (label = rating >= 4, so negatives are explicit); an item's tags are
the normalised tags anybody applied to the movie in ``tags.csv`` and every interaction's
coalition is its item's tag set, because MovieLens does not tie tags to ratings.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from training.data.errors import DataFormatError
from training.data.ragged import Ragged
from training.data.raw import RawDataset, Vocabulary
from training.data.textio import Table, read_table

RATINGS_FILE = "ratings.csv"
MOVIES_FILE = "movies.csv"
TAGS_FILE = "tags.csv"
POSITIVE_RATING = 4.0
NO_GENRES = "(no genres listed)"


def load_movielens(path: Path) -> RawDataset:
    """Load a MovieLens CSV directory; all three files are required."""
    path = Path(path)
    ratings = read_table(
        path / RATINGS_FILE, ",", ("userId", "movieId", "rating", "timestamp"), quoted=True
    )
    movies = read_table(path / MOVIES_FILE, ",", ("movieId", "genres"), quoted=True)
    tags = read_table(path / TAGS_FILE, ",", ("userId", "movieId", "tag", "timestamp"), quoted=True)
    if not len(ratings):
        raise DataFormatError(ratings.path, None, "no ratings after the header line")

    rating_user = ratings.ints("userId")
    rating_movie = ratings.ints("movieId")
    rating = ratings.floats("rating")
    rating_time = ratings.ints("timestamp")
    movie_ids = movies.ints("movieId")
    check_unique(movies, movie_ids, "movieId")
    tag_movie = tags.ints("movieId")
    for column in ("userId", "timestamp"):
        tags.ints(column)  # unused, but parsed so that a shifted or corrupt row fails loudly

    user_raw, inter_user = np.unique(rating_user, return_inverse=True)
    item_raw = np.unique(np.concatenate([movie_ids, rating_movie, tag_movie]))
    n_items = len(item_raw)
    inter_item = np.searchsorted(item_raw, rating_movie)
    tag_names, item_tags, tag_counts = _item_tags(
        tags, np.searchsorted(item_raw, tag_movie), n_items
    )

    return _validated(
        RawDataset(
            name="movielens",
            tag_names=tag_names,
            user_ids=[str(u) for u in user_raw.tolist()],
            item_ids=[str(i) for i in item_raw.tolist()],
            inter_user=inter_user.astype(np.int32),
            inter_item=inter_item.astype(np.int32),
            inter_label=(rating >= POSITIVE_RATING).astype(np.int8),
            inter_time=rating_time,
            inter_tags=item_tags.take(inter_item),
            item_tags=item_tags,
            tag_counts=tag_counts,
            privileged={
                "genre": genre_field(movies, np.searchsorted(item_raw, movie_ids), n_items)
            },
            explicit_negatives=True,
        )
    )


def normalise_tag(tag: str) -> str:
    """MovieLens tags are free text: ``"Funny "`` and ``"funny"`` are the same tag."""
    return tag.strip().lower()


def tag_vocabulary(tags: Sequence[str]) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Normalised free-text tags: (mask of the rows kept, vocabulary sorted by name, tag index
    of each kept row). A tag that normalises to nothing (blank, a lone no-break space) is
    dropped: it names nothing a profile could show."""
    names = [normalise_tag(tag) for tag in tags]
    keep = np.fromiter((bool(name) for name in names), dtype=bool, count=len(names))
    vocabulary, tag_index = np.unique(
        np.array([name for name in names if name], dtype=str), return_inverse=True
    )
    return keep, vocabulary.tolist(), tag_index


def _item_tags(
    tags: Table, tag_item: np.ndarray, n_items: int
) -> tuple[list[str], Ragged, np.ndarray]:
    """Tag vocabulary (sorted by name), each item's distinct tags and applications per tag."""
    keep, vocabulary, tag_index = tag_vocabulary(tags.strings("tag"))
    item_tags = Ragged.from_pairs(tag_item[keep], tag_index, n_items)
    counts = np.bincount(tag_index, minlength=len(vocabulary)).astype(np.int64)
    return vocabulary, item_tags, counts


def genre_field(movies: Table, movie_item: np.ndarray, n_items: int) -> tuple[Vocabulary, Ragged]:
    """The multi-valued genre field; ``(no genres listed)`` means no value, and a row whose
    item is -1 (a movie the data set does not use) is skipped."""
    rows, values = [], []
    for item, genres in zip(movie_item.tolist(), movies.strings("genres"), strict=True):
        if item < 0:
            continue
        for genre in genres.split("|"):
            genre = genre.strip()
            if genre and genre != NO_GENRES:
                rows.append(item)
                values.append(genre)
    return item_field(np.array(rows, dtype=np.int64), values, n_items)


def item_field(
    item_index: np.ndarray, values: Sequence[str], n_items: int
) -> tuple[Vocabulary, Ragged]:
    """A categorical item field from (item, value) pairs; vocabulary sorted by value."""
    vocabulary, value_index = np.unique(np.array(values, dtype=str), return_inverse=True)
    return Vocabulary(vocabulary.tolist()), Ragged.from_pairs(item_index, value_index, n_items)


def check_unique(table: Table, ids: np.ndarray, column: str) -> None:
    """Two rows for one id would make the second silently win: refuse instead."""
    order = np.argsort(ids, kind="stable")
    repeated = np.flatnonzero(ids[order][1:] == ids[order][:-1])
    if len(repeated):
        row = int(order[repeated + 1].min())
        raise table.error(row, f"column {column!r}: duplicate id {int(ids[row])}")


def _validated(dataset: RawDataset) -> RawDataset:
    dataset.validate()
    return dataset
