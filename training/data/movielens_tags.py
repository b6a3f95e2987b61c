"""Loader for MovieLens tag applications without ratings (``--dataset movielens-tags``).

A self-tagging set like HetRec: an interaction is a (user, movie) pair, its coalition the
normalised tags that user applied to that movie (:mod:`training.data.assignments`), and
negatives are sampled by the protocol. The layout is told by the file names:

- ML-10M: ``tags.dat`` (``UserID::MovieID::Tag::Timestamp``) and ``movies.dat``
  (``MovieID::Title::Genres``): no header, ``::``-separated, unquoted; used when present;
- ML-20M/25M and ml-latest: ``tags.csv`` and ``movies.csv``, with a header.

``ratings.*`` files are ignored even when present: ratings as interactions are the
``movielens`` data set; this one measures what users tag, on any MovieLens release.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.data.assignments import Field, group_assignments
from training.data.errors import DataFormatError
from training.data.movielens import check_unique, genre_field, tag_vocabulary
from training.data.raw import RawDataset
from training.data.textio import Table, read_headerless, read_table

NAME = "movielens-tags"
TAG_COLUMNS = ("userId", "movieId", "tag", "timestamp")
DAT_SEPARATOR = "::"


def load_movielens_tags(path: Path) -> RawDataset:
    """Tag applications as interactions, genres of ``movies.*`` as the privileged field."""
    tags, movies = _read(Path(path))
    user, movie, time = (tags.ints(column) for column in ("userId", "movieId", "timestamp"))
    keep, tag_names, tag_index = tag_vocabulary(tags.strings("tag"))
    movie_ids = movies.ints("movieId")
    check_unique(movies, movie_ids, "movieId")
    if not keep.any():
        raise DataFormatError(tags.path, None, "no tag applications with a non-blank tag")

    def genres(items: np.ndarray) -> dict[str, Field]:
        return {"genre": genre_field(movies, _positions(items, movie_ids), len(items))}

    return group_assignments(
        NAME, user[keep], movie[keep], tag_index, time[keep], tag_names, genres
    )


def _read(path: Path) -> tuple[Table, Table]:
    """(tags, movies) in whichever layout the directory holds; ``tags.dat`` wins."""
    if (path / "tags.dat").is_file():
        return (
            read_headerless(path / "tags.dat", DAT_SEPARATOR, TAG_COLUMNS, free="tag"),
            read_headerless(
                path / "movies.dat", DAT_SEPARATOR, ("movieId", "title", "genres"), free="title"
            ),
        )
    if (path / "tags.csv").is_file():
        return (
            read_table(path / "tags.csv", ",", TAG_COLUMNS, quoted=True),
            read_table(path / "movies.csv", ",", ("movieId", "genres"), quoted=True),
        )
    if not path.is_dir():
        raise DataFormatError(path, None, "data directory not found")
    raise DataFormatError(
        path / "tags.dat",
        None,
        f"required file 'tags.dat' (MovieLens 10M) or 'tags.csv' (20M, 25M) not found in {path}",
    )


def _positions(items: np.ndarray, movie_ids: np.ndarray) -> np.ndarray:
    """Index of each movie id in the sorted ``items``, -1 for movies nobody tagged."""
    position = np.searchsorted(items, movie_ids).clip(max=len(items) - 1)
    return np.where(items[position] == movie_ids, position, -1)
