"""The loaders on the real files in ../shared/datasets (skipped where they are absent).

The expected numbers were counted independently of the loaders (awk, the csv module) and
match the data sets' READMEs, so a parsing regression shows up as a wrong count here.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from training.data.hetrec import load_hetrec_movielens
from training.data.movielens import load_movielens
from training.data.movielens_tags import load_movielens_tags

pytestmark = pytest.mark.realdata


def test_ml_latest_small_counts(ml_latest_small: Path) -> None:
    data = load_movielens(ml_latest_small)
    assert data.n_users == 610
    assert data.n_items == 9742
    assert data.n_interactions == 100_836
    assert int(data.tag_counts.sum()) == 3683  # tag applications
    assert data.n_tags == 1475  # distinct tags after lower-casing and stripping
    assert int((data.tag_counts >= 5).sum()) == 184
    assert len(data.privileged["genre"][0]) == 19  # 20 labels minus "(no genres listed)"


def test_ml_latest_small_positives_match_an_independent_count(ml_latest_small: Path) -> None:
    with (ml_latest_small / "ratings.csv").open(newline="", encoding="utf-8") as file:
        positives = sum(float(row["rating"]) >= 4 for row in csv.DictReader(file))
    data = load_movielens(ml_latest_small)
    assert positives == 48_580
    assert int(data.inter_label.sum()) == positives


def test_ml_latest_small_quoted_titles_do_not_shift_genres(ml_latest_small: Path) -> None:
    data = load_movielens(ml_latest_small)
    vocab, genres = data.privileged["genre"]
    item = data.item_ids.index("11")  # "American President, The (1995)": quoted, with a comma
    assert [vocab.names[g] for g in genres[item]] == ["Comedy", "Drama", "Romance"]


def test_hetrec_movielens_2k_counts(hetrec_movielens_2k: Path) -> None:
    data = load_hetrec_movielens(hetrec_movielens_2k)
    assert data.n_users == 2113
    assert data.n_items == 5908
    assert data.n_interactions == 27_712  # distinct user-movie pairs
    assert int(data.tag_counts.sum()) == 47_957  # tag assignments
    assert data.n_tags == 9079
    assert int((data.tag_counts >= 5).sum()) == 1586
    assert int(data.inter_tags.lengths().max()) == 41
    assert len(data.privileged["genre"][0]) == 19
    assert len(data.privileged["director"][0]) == 2518


def test_hetrec_movielens_2k_latin1_tag_names_decode(hetrec_movielens_2k: Path) -> None:
    raw_lines = (hetrec_movielens_2k / "tags.dat").read_bytes().split(b"\n")
    latin1 = [line.decode("latin-1").split("\t")[1] for line in raw_lines if not _utf8(line)]
    assert "muitas cores mistério" in latin1  # tag 7002, stored as the single byte 0xe9
    names = set(load_hetrec_movielens(hetrec_movielens_2k).tag_names)
    assert {"muitas cores mistério", "téa leoni"} <= names


def test_hetrec_movielens_2k_calendar_file_is_local_time(
    hetrec_movielens_2k: Path, tmp_path: Path
) -> None:
    """Without the ms file the same pairs load; the calendar fields are CET/CEST, not UTC."""
    for source in hetrec_movielens_2k.iterdir():
        if source.name != "user_taggedmovies-timestamps.dat":
            (tmp_path / source.name).symlink_to(source)
    from_dates = load_hetrec_movielens(tmp_path)
    from_ms = load_hetrec_movielens(hetrec_movielens_2k)
    assert np.array_equal(from_dates.inter_user, from_ms.inter_user)
    assert np.array_equal(from_dates.inter_item, from_ms.inter_item)
    assert from_dates.inter_tags == from_ms.inter_tags
    assert set(np.unique(from_dates.inter_time - from_ms.inter_time).tolist()) == {3600, 7200}


def test_ml_10m_tags_counts(ml_10m_tags: Path) -> None:
    rows = [line.split("::") for line in (ml_10m_tags / "tags.dat").read_text("utf-8").split("\n")]
    rows = [row for row in rows if row != [""]]
    assert len(rows) == 95_580 and {len(row) for row in rows} == {4}  # no '::' inside a field
    data = load_movielens_tags(ml_10m_tags)
    assert data.n_users == len({row[0] for row in rows}) == 4009
    assert data.n_items == len({row[1] for row in rows}) == 7601
    assert data.n_interactions == len({(row[0], row[1]) for row in rows}) == 55_484
    # six applications are a lone no-break space, which normalises to no tag
    assert int(data.tag_counts.sum()) == 95_580 - 6
    assert data.n_tags == 15_238  # distinct after lower-casing and stripping
    assert int((data.tag_counts >= 5).sum()) == 2857  # the protocol's min-count filter
    assert int(data.inter_tags.lengths().max()) == 48
    assert data.inter_label.all() and not data.explicit_negatives
    assert len(data.privileged["genre"][0]) == 19  # the README's 18 with "Children", + IMAX


def test_ml_10m_tags_colons_and_utf8(ml_10m_tags: Path) -> None:
    data = load_movielens_tags(ml_10m_tags)
    assert ":-)" in data.tag_names  # 30210::3977:::-)::1141863662
    assert "beast of gévaudan" in data.tag_names  # UTF-8, decoded as such
    vocab, genres = data.privileged["genre"]
    item = data.item_ids.index("260")  # "Star Wars: Episode IV - A New Hope (a.k.a. ...)"
    assert [vocab.names[g] for g in genres[item]] == ["Action", "Adventure", "Sci-Fi"]


def _utf8(line: bytes) -> bool:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
