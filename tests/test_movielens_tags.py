"""``movielens-tags``: MovieLens tag applications without ratings, in both on-disk layouts.

The fixtures are written in the real formats: the ML-10M ``::`` files (no header, unquoted,
tags and titles holding ``:``) and the ML-20M/25M CSV files (header, quoted titles). Both
layouts of the same applications must load to the same data set.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest

from training.cli import main
from training.data.errors import DataFormatError
from training.data.movielens_tags import load_movielens_tags
from training.data.processed import ProcessedDataset
from training.data.textio import read_headerless

from .test_loaders import assert_error, fields

NBSP = "\xa0"
APPLICATIONS = [  # user, movie, tag as typed, unix seconds (ML-10M order: by user, then movie)
    (5, 1, "pixar", 50),
    (5, 3, NBSP, 80),  # normalises to nothing: dropped, and with it the pair (5, 3)
    (5, 7, "director:Lasseter", 60),
    (5, 7, "Café", 70),
    (5, 11, "Pixar", 90),  # movie 11 is not in the movies file: an item without genres
    (20, 1, "Funny", 300),
    (20, 1, " funny ", 100),  # the same tag as "Funny"; the pair's time is this, its first
    (20, 1, "Pixar", 200),
    (20, 3, ":-)", 400),  # written 20::3:::-)::400
    (20, 3, "sci-fi:", 410),  # written 20::3::sci-fi:::410
]
MOVIES = [
    (1, "Toy Story (1995)", "Animation|Comedy"),
    (3, "Star Wars: Episode IV, A New Hope (1977)", "Action|Sci-Fi"),
    (7, "Luxo Jr. (1986)", "(no genres listed)"),
    (9, "Never Tagged (2000)", "Drama"),  # no tag application: not an item
]
TAG_NAMES = [":-)", "café", "director:lasseter", "funny", "pixar", "sci-fi:"]
TAG_LINE = 4  # 1-based line of (5, 7, "Café") in tags.dat (a blank line 2 is skipped)


def dat_files(directory: Path) -> Path:
    """The ML-10M layout, UTF-8, with a blank line so rows and line numbers differ."""
    tags = [f"{u}::{m}::{t}::{s}" for u, m, t, s in APPLICATIONS]
    tags.insert(1, "")
    movies = [f"{m}::{title}::{genres}" for m, title, genres in MOVIES]
    (directory / "tags.dat").write_bytes(("\n".join(tags) + "\n").encode())
    (directory / "movies.dat").write_bytes(("\n".join(movies) + "\n").encode())
    return directory


def csv_files(directory: Path) -> Path:
    """The ML-20M/25M layout: header lines, CSV quoting where a field needs it."""
    for name, header, rows in (
        ("tags.csv", ("userId", "movieId", "tag", "timestamp"), APPLICATIONS),
        ("movies.csv", ("movieId", "title", "genres"), MOVIES),
    ):
        text = io.StringIO()
        csv.writer(text, lineterminator="\n").writerows([header, *rows])
        (directory / name).write_bytes(text.getvalue().encode())
    return directory


LAYOUTS = {"dat": dat_files, "csv": csv_files}


def replace_line(path: Path, number: int, text: str) -> None:
    lines = path.read_text(encoding="utf-8").split("\n")
    lines[number - 1] = text
    path.write_text("\n".join(lines), encoding="utf-8")


# --------------------------------------------------------------------------------------------
# contents


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_contents(tmp_path: Path, layout: str) -> None:
    data = load_movielens_tags(LAYOUTS[layout](tmp_path))
    assert data.name == "movielens-tags"
    assert not data.explicit_negatives  # the protocol samples negatives, as for HetRec
    assert data.user_ids == ["5", "20"]
    assert data.item_ids == ["1", "3", "7", "11"]
    assert data.tag_names == TAG_NAMES  # lower-cased, stripped, ':' kept, NBSP-only dropped
    # one interaction per (user, movie) pair; its coalition is that user's tags of that movie
    assert data.inter_user.tolist() == [0, 0, 0, 1, 1]
    assert data.inter_item.tolist() == [0, 2, 3, 0, 1]
    assert data.inter_tags.to_lists() == [[4], [1, 2], [4], [3, 4], [0, 5]]
    assert data.inter_label.tolist() == [1] * 5
    assert data.inter_time.tolist() == [50, 60, 90, 100, 400]  # the pair's first application
    assert data.item_tags.to_lists() == [[3, 4], [0, 5], [1, 2], [4]]
    assert data.tag_counts.tolist() == [1, 1, 1, 2, 3, 1]  # applications, "Funny"+" funny "
    assert fields(data) == {
        "genre": (["Action", "Animation", "Comedy", "Sci-Fi"], [[1, 2], [0, 3], [], []])
    }


def test_dat_layout_wins_and_ratings_are_ignored(tmp_path: Path) -> None:
    csv_files(tmp_path)
    (tmp_path / "tags.csv").write_text("userId,movieId,tag,timestamp\n1,1,other,5\n")
    (tmp_path / "ratings.csv").write_text("not, read\n")
    (tmp_path / "ratings.dat").write_text("not read\n")
    dat_files(tmp_path)
    assert load_movielens_tags(tmp_path).tag_names == TAG_NAMES


def test_csv_layout_ignores_ratings(tmp_path: Path) -> None:
    csv_files(tmp_path)
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n5,9,5.0,1\n")
    data = load_movielens_tags(tmp_path)
    assert data.item_ids == ["1", "3", "7", "11"]  # movie 9, rated only, is no item


def test_latin1_lines_decode(tmp_path: Path) -> None:
    """Older MovieLens files are Latin-1; a line that is not UTF-8 still decodes."""
    dat_files(tmp_path)
    tags = (tmp_path / "tags.dat").read_bytes().replace("Café".encode(), b"Caf\xe9")
    (tmp_path / "tags.dat").write_bytes(tags)
    assert load_movielens_tags(tmp_path).tag_names == TAG_NAMES


# --------------------------------------------------------------------------------------------
# the '::' reader


@pytest.mark.parametrize(
    ("line", "fields_read"),
    [
        ("1::2::plain::3", ["1", "2", "plain", "3"]),
        ("1::2:::-)::3", ["1", "2", ":-)", "3"]),
        ("1::2::ends:::3", ["1", "2", "ends:", "3"]),
        ("1::2:::both:::3", ["1", "2", ":both:", "3"]),
        ("1::2::a:b: c::3", ["1", "2", "a:b: c", "3"]),
        ("1::2::::3", ["1", "2", "", "3"]),
    ],
)
def test_headerless_free_field_may_hold_colons(
    tmp_path: Path, line: str, fields_read: list[str]
) -> None:
    path = tmp_path / "tags.dat"
    path.write_text(line + "\r\n")
    table = read_headerless(path, "::", ("u", "m", "tag", "t"), free="tag")
    assert [table.strings(c)[0] for c in ("u", "m", "tag", "t")] == fields_read
    assert table.lines == [1]


# --------------------------------------------------------------------------------------------
# errors

DAT_ERRORS: list[tuple[str, str, str | None, int | None, str]] = [
    # (id, file, new text of line TAG_LINE (tags.dat) or 2 (movies.dat); None = delete file,
    #  line named, message fragment)
    ("too-few-fields", "tags.dat", "5::7::Café", TAG_LINE, "expected 4 '::'-separated fields"),
    ("separator-in-tag", "tags.dat", "5::7::a::b::70", TAG_LINE, "found 5"),
    ("tab-separated", "tags.dat", "5\t7\tcafé\t70", TAG_LINE, "expected '::'-separated, found tab"),
    ("non-integer-user", "tags.dat", "x::7::café::70", TAG_LINE, "'userId': expected an integer"),
    ("non-integer-movie", "tags.dat", "5::7a::café::70", TAG_LINE, "found '7a'"),
    ("non-integer-time", "tags.dat", "5::7::café::1.5e9", TAG_LINE, "'timestamp'"),
    ("movie-fields", "movies.dat", "3::Star Wars (1977)", 2, "expected 3 '::'-separated fields"),
    ("movie-id", "movies.dat", "three::Star Wars (1977)::Action", 2, "'movieId'"),
    ("duplicate-movie", "movies.dat", "1::Toy Story again::Comedy", 2, "duplicate id 1"),
    ("missing-movies", "movies.dat", None, None, "required file 'movies.dat' not found"),
]


@pytest.mark.parametrize(
    ("file", "text", "line", "fragment"),
    [case[1:] for case in DAT_ERRORS],
    ids=[case[0] for case in DAT_ERRORS],
)
def test_dat_errors_name_file_and_line(
    tmp_path: Path, file: str, text: str | None, line: int | None, fragment: str
) -> None:
    dat_files(tmp_path)
    if text is None:
        (tmp_path / file).unlink()
    else:
        replace_line(tmp_path / file, line, text)
    with pytest.raises(DataFormatError) as error:
        load_movielens_tags(tmp_path)
    assert_error(error, tmp_path / file, line, fragment)


CSV_ERRORS: list[tuple[str, str, str | None, int | None, str]] = [
    # (id, file, new text of line 3; None = delete file; "" = empty file, line, fragment)
    ("fields", "tags.csv", "5,7,café", 3, "expected 4 comma-separated fields"),
    ("non-integer-time", "tags.csv", "5,7,café,later", 3, "'timestamp'"),
    ("movie-id", "movies.csv", "x,Title,Drama", 3, "'movieId'"),
    ("empty-tags", "tags.csv", "", 1, "file is empty"),
    ("missing-movies", "movies.csv", None, None, "required file 'movies.csv' not found"),
]


@pytest.mark.parametrize(
    ("file", "text", "line", "fragment"),
    [case[1:] for case in CSV_ERRORS],
    ids=[case[0] for case in CSV_ERRORS],
)
def test_csv_errors_name_file_and_line(
    tmp_path: Path, file: str, text: str | None, line: int | None, fragment: str
) -> None:
    csv_files(tmp_path)
    if text is None:
        (tmp_path / file).unlink()
    elif not text:
        (tmp_path / file).write_bytes(b"")
    else:
        replace_line(tmp_path / file, line, text)
    with pytest.raises(DataFormatError) as error:
        load_movielens_tags(tmp_path)
    assert_error(error, tmp_path / file, line, fragment)


@pytest.mark.parametrize(
    ("layout", "file", "content", "fragment"),
    [
        ("dat", "tags.dat", b"", "file is empty; expected lines userId::movieId::tag::timestamp"),
        ("dat", "tags.dat", b"\n \n", "file is empty"),
        ("dat", "movies.dat", b"", "file is empty"),
        ("dat", "tags.dat", f"5::1::{NBSP}::1\n5::1::  ::2\n".encode(), "no tag applications"),
        ("csv", "tags.csv", b"userId,movieId,tag,timestamp\n", "no tag applications"),
    ],
    ids=["empty", "blank-lines", "empty-movies", "blank-tags", "header-only"],
)
def test_files_without_applications(
    tmp_path: Path, layout: str, file: str, content: bytes, fragment: str
) -> None:
    LAYOUTS[layout](tmp_path)
    (tmp_path / file).write_bytes(content)
    with pytest.raises(DataFormatError) as error:
        load_movielens_tags(tmp_path)
    assert_error(error, tmp_path / file, None, fragment)


def test_missing_tags_file_names_both_layouts(tmp_path: Path) -> None:
    (tmp_path / "movies.dat").write_text("1::A (1995)::Drama\n")
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n")
    with pytest.raises(DataFormatError) as error:
        load_movielens_tags(tmp_path)
    assert_error(error, tmp_path / "tags.dat", None, "'tags.dat' (MovieLens 10M) or 'tags.csv'")


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError) as error:
        load_movielens_tags(tmp_path / "nowhere")
    assert_error(error, tmp_path / "nowhere", None, "data directory not found")


# --------------------------------------------------------------------------------------------
# prepare end to end


def write_world(directory: Path, *, users: int = 40) -> Path:
    """A small ML-10M-layout folder: every user tags 6 of 20 movies with 1-3 of 8 tags."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    lines = []
    for u in range(1, users + 1):
        for k, movie in enumerate(sorted(rng.choice(20, size=6, replace=False))):
            for tag in rng.choice(8, size=rng.integers(1, 4), replace=False):
                lines.append(f"{u}::{movie + 1}::Tag:{tag}::{1_000_000 + 1000 * k + int(tag)}")
    (directory / "tags.dat").write_text("\n".join(lines) + "\n")
    genres = ("Drama", "Comedy|Drama", "Sci-Fi", "(no genres listed)")
    movies = [f"{m}::Movie: {m} (2000)::{genres[m % 4]}" for m in range(1, 21)]
    (directory / "movies.dat").write_text("\n".join(movies) + "\n")
    return directory


def test_prepare_end_to_end(tmp_path: Path) -> None:
    raw = write_world(tmp_path / "raw")
    out = tmp_path / "out"
    assert (
        main(["prepare", "--dataset", "movielens-tags", "--path", str(raw), "--out", str(out)]) == 0
    )
    stats = json.loads((out / "stats.json").read_text())
    assert stats["dataset"] == "movielens-tags"
    assert stats["users"] == 40 and stats["test_users"] == 8
    assert stats["tags"] == 8
    assert stats["sampled_negatives"] > 0  # no explicit negatives: sampled as for HetRec
    assert stats["privileged"] == {"genre": 4}  # others, Comedy, Drama, Sci-Fi
    meta = json.loads((out / "meta.json").read_text())
    assert meta["family"] == "hetrec"
    assert meta["protocol"]["min_tag_count"] == 5 and meta["protocol"]["tau"] == 0.1
    data = ProcessedDataset.load(out)
    assert data.tag_names == [f"tag:{t}" for t in range(8)]


def test_prepare_bad_line_exits_2_naming_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = write_world(tmp_path / "raw")
    replace_line(raw / "tags.dat", 7, "3::4::tag")
    argv = ["prepare", "--dataset", "movielens-tags", "--path", str(raw)]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    assert f"{raw / 'tags.dat'}:7: expected 4 '::'-separated fields" in capsys.readouterr().err
    assert not (tmp_path / "out" / "dataset.npz").exists()
