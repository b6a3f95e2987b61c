"""Loaders on small hand-written files in the real formats: exact contents and clear errors.

The fixtures mirror the real files (header lines, Latin-1 and UTF-8 bytes mixed in one file,
quoted CSV fields with commas) so that a loader that passes here parses the real data the
same way; every malformed case must name the file and the offending line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from training.data.errors import DataFormatError
from training.data.hetrec import load_hetrec_delicious, load_hetrec_lastfm, load_hetrec_movielens
from training.data.movielens import load_movielens
from training.data.raw import RawDataset
from training.data.textio import decode_lines, parse_float, parse_int, read_table


def write(path: Path, content: bytes) -> None:
    path.write_bytes(content)


def fields(data: RawDataset) -> dict[str, tuple[list[str], list[list[int]]]]:
    """Privileged fields as plain lists, easy to compare exactly."""
    return {
        name: (vocab.names, values.to_lists()) for name, (vocab, values) in data.privileged.items()
    }


def assert_error(
    error: pytest.ExceptionInfo[DataFormatError], file: Path, line: int | None, fragment: str
) -> None:
    """The error names the file and line, in ``path:line: message`` form, and says what."""
    assert error.value.path == file
    assert error.value.line == line
    where = f"{file}:{line}" if line is not None else str(file)
    assert str(error.value).startswith(f"{where}: ")
    assert fragment in error.value.message


# --------------------------------------------------------------------------------------------
# textio


def test_decode_lines_mixes_utf8_and_latin1_per_line() -> None:
    data = b"\xef\xbb\xbfid\tvalue\r\n1\tcaf\xe9\r\n2\tna\xc3\xafve\r\n3\tx\x85y\r\n"
    assert decode_lines(data) == ["id\tvalue", "1\tcafé", "2\tnaïve", "3\tx\x85y"]


def test_read_table_keeps_line_numbers_across_blank_lines_and_quoted_newlines(
    tmp_path: Path,
) -> None:
    path = tmp_path / "movies.csv"
    write(path, b'movieId,title,genres\n\n1,"Two\nlines, here",Drama\n\n2,Plain,Comedy\n')
    table = read_table(path, ",", ["MOVIEID", "genres"], optional=[("name", "title")], quoted=True)
    assert table.strings("name") == ["Two\nlines, here", "Plain"]
    assert table.ints("MOVIEID").tolist() == [1, 2]
    assert table.lines == [3, 6]
    assert not table.has("absent")


def test_read_table_drops_trailing_empty_fields(tmp_path: Path) -> None:
    path = tmp_path / "tags.dat"
    write(path, b"id\tvalue\n1\tfoo\t\n")
    assert read_table(path, "\t", ["id", "value"]).strings("value") == ["foo"]


def test_parse_helpers_name_file_line_and_column(tmp_path: Path) -> None:
    assert parse_int(" 42 ", "f.dat", 3, "id") == 42
    assert parse_float("3.5", "f.dat", 3, "rating") == 3.5
    with pytest.raises(DataFormatError) as error:
        parse_int("4x", tmp_path / "f.dat", 7, "userID")
    assert_error(error, tmp_path / "f.dat", 7, "'userID': expected an integer, found '4x'")
    with pytest.raises(DataFormatError) as error:
        parse_int("99999999999999999999", tmp_path / "f.dat", 2, "id")
    assert_error(error, tmp_path / "f.dat", 2, "int64")
    with pytest.raises(DataFormatError) as error:
        parse_float("nan", tmp_path / "f.dat", 9, "rating")
    assert_error(error, tmp_path / "f.dat", 9, "'rating': expected a number, found 'nan'")


# --------------------------------------------------------------------------------------------
# MovieLens CSV

ML_RATINGS = b"""userId,movieId,rating,timestamp
10,1,4.0,100
2,2,3.5,200
10,3,5.0,300
2,1,4.5,50
"""
ML_MOVIES = b"""movieId,title,genres
1,"Caf\xe9, The (1999)",Comedy|Drama
3,Foo (2000),(no genres listed)
2,"Bar, A (2001)",Drama
"""
ML_TAGS = b"""userId,movieId,tag,timestamp
2,1,Funny,10
10,1, funny ,20
2,3,caf\xe9,30
2,4,  ,40
10,2,Dark,50
10,2,Na\xc3\xafve,60
"""


def write_movielens(directory: Path) -> Path:
    write(directory / "ratings.csv", ML_RATINGS)
    write(directory / "movies.csv", ML_MOVIES)
    write(directory / "tags.csv", ML_TAGS)
    return directory


def test_movielens_contents(tmp_path: Path) -> None:
    data = load_movielens(write_movielens(tmp_path))
    assert data.name == "movielens"
    assert data.explicit_negatives
    assert data.user_ids == ["2", "10"]  # numeric, not string, order
    assert data.item_ids == ["1", "2", "3", "4"]  # movie 4 is only in tags.csv
    assert data.tag_names == ["café", "dark", "funny", "naïve"]
    assert data.inter_user.tolist() == [1, 0, 1, 0]
    assert data.inter_item.tolist() == [0, 1, 2, 0]
    assert data.inter_label.tolist() == [1, 0, 1, 1]
    assert data.inter_label.dtype == np.int8
    assert data.inter_time.tolist() == [100, 200, 300, 50]
    assert data.inter_time.dtype == np.int64
    assert data.item_tags.to_lists() == [[2], [1, 3], [0], []]
    assert data.inter_tags.to_lists() == [[2], [1, 3], [0], [2]]
    assert data.tag_counts.tolist() == [1, 1, 2, 1]
    assert fields(data) == {"genre": (["Comedy", "Drama"], [[0, 1], [1], [], []])}


ML_ERRORS: list[tuple[str, str, bytes | None, int | None, str]] = [
    # (id, file, new content or None = delete, line, message fragment)
    ("missing-column", "ratings.csv", b"userId,movieId,score,timestamp\n1,1,4,5\n", 1, "'rating'"),
    (
        "wrong-separator",
        "ratings.csv",
        b"userId\tmovieId\trating\ttimestamp\n1\t1\t4\t5\n",
        1,
        "expected comma-separated, found tab",
    ),
    ("empty-file", "movies.csv", b"", 1, "empty"),
    ("blank-file", "tags.csv", b"\n  \n", 1, "empty"),
    (
        "non-numeric-id",
        "ratings.csv",
        b"userId,movieId,rating,timestamp\n1,1,4,5\n\nabc,1,4,5\n",
        4,
        "'userId': expected an integer, found 'abc'",
    ),
    (
        "non-numeric-rating",
        "ratings.csv",
        b"userId,movieId,rating,timestamp\n1,1,four,5\n",
        2,
        "'rating': expected a number, found 'four'",
    ),
    (
        "non-numeric-tag-timestamp",
        "tags.csv",
        b"userId,movieId,tag,timestamp\n1,1,a,5\n1,1,b,yesterday\n",
        3,
        "'timestamp'",
    ),
    (
        "wrong-field-count",
        "ratings.csv",
        b"userId,movieId,rating,timestamp\n1,1,4,5\n1,2,4\n",
        3,
        "expected 4 comma-separated fields",
    ),
    (
        "duplicate-movie",
        "movies.csv",
        b"movieId,title,genres\n1,A,Drama\n1,B,Drama\n",
        3,
        "duplicate id 1",
    ),
    ("no-ratings", "ratings.csv", b"userId,movieId,rating,timestamp\n", None, "no ratings"),
    ("missing-file", "tags.csv", None, None, "'tags.csv' not found"),
]


@pytest.mark.parametrize(
    ("file", "content", "line", "fragment"),
    [case[1:] for case in ML_ERRORS],
    ids=[case[0] for case in ML_ERRORS],
)
def test_movielens_errors(
    tmp_path: Path, file: str, content: bytes | None, line: int | None, fragment: str
) -> None:
    write_movielens(tmp_path)
    if content is None:
        (tmp_path / file).unlink()
    else:
        write(tmp_path / file, content)
    with pytest.raises(DataFormatError) as error:
        load_movielens(tmp_path)
    assert_error(error, tmp_path / file, line, fragment)


def test_movielens_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError) as error:
        load_movielens(tmp_path / "nowhere")
    assert_error(error, tmp_path / "nowhere", None, "not found")


# --------------------------------------------------------------------------------------------
# HetRec 2011

ASSIGNMENTS = [  # user, item, tag, UTC time, extra milliseconds (the ms file floors them)
    (20, 7, 3, datetime(2008, 2, 29, 10, 0, 0, tzinfo=UTC), 0),
    (5, 7, 1, datetime(2009, 1, 1, 0, 0, 1, tzinfo=UTC), 250),
    (20, 7, 1, datetime(2008, 2, 28, 23, 59, 59, tzinfo=UTC), 999),
    (20, 9, 3, datetime(2010, 6, 15, 8, 0, 0, tzinfo=UTC), 0),
    (5, 7, 1, datetime(2008, 12, 31, 12, 0, 0, tzinfo=UTC), 1),
    (5, 12, 10, datetime(2007, 5, 5, 5, 5, 5, tzinfo=UTC), 500),
]
EARLIEST = [4, 5, 2, 3]  # per (user, item) pair in (user, item) order: its first assignment
HETREC_TAGS = b"id\tvalue\n10\tcaf\xe9\n1\tdrama\n2\tunused\n3\tna\xc3\xafve\n"


@dataclass(frozen=True)
class Hetrec:
    """One HetRec set: its files, header spellings and the privileged fields it must yield."""

    name: str
    load: Callable[[Path], RawDataset]
    item_column: str
    timestamps_file: str
    dates_file: str
    timestamp_column: str
    date_columns: tuple[str, ...]  # day, month, year[, hour, minute, second]
    tags_header: bytes
    extra_files: dict[str, bytes]
    privileged: dict[str, tuple[list[str], list[list[int]]]]

    def write(self, directory: Path, variant: str) -> Path:
        head = f"userID\t{self.item_column}\ttagID\t".encode()
        if variant == "timestamps":
            rows = [
                f"{u}\t{i}\t{t}\t{int(d.timestamp()) * 1000 + ms}" for u, i, t, d, ms in ASSIGNMENTS
            ]
            write(directory / self.timestamps_file, head + self._lines(self.timestamp_column, rows))
        else:
            rows = [f"{u}\t{i}\t{t}\t{self._calendar(d)}" for u, i, t, d, _ in ASSIGNMENTS]
            write(
                directory / self.dates_file, head + self._lines("\t".join(self.date_columns), rows)
            )
        write(directory / "tags.dat", HETREC_TAGS.replace(b"id\tvalue", self.tags_header))
        for name, content in self.extra_files.items():
            write(directory / name, content)
        return directory

    def assignments_file(self, variant: str) -> str:
        return self.timestamps_file if variant == "timestamps" else self.dates_file

    def expected_times(self, variant: str) -> list[int]:
        with_clock = variant == "timestamps" or len(self.date_columns) == 6
        times = [ASSIGNMENTS[a][3] for a in EARLIEST]
        if not with_clock:
            times = [t.replace(hour=0, minute=0, second=0) for t in times]
        return [int(t.timestamp()) for t in times]

    def _calendar(self, d: datetime) -> str:
        parts = (d.day, d.month, d.year, d.hour, d.minute, d.second)
        return "\t".join(str(p) for p in parts[: len(self.date_columns)])

    @staticmethod
    def _lines(header_tail: str, rows: list[str]) -> bytes:
        return (header_tail + "\n" + "\n".join(rows) + "\n").encode()


HETRECS = [
    Hetrec(
        name="hetrec-movielens",
        load=load_hetrec_movielens,
        item_column="movieID",
        timestamps_file="user_taggedmovies-timestamps.dat",
        dates_file="user_taggedmovies.dat",
        timestamp_column="unixTimeStamp",
        date_columns=tuple(
            f"date_{c}" for c in ("day", "month", "year", "hour", "minute", "second")
        ),
        tags_header=b"id\tvalue",
        extra_files={
            "movie_genres.dat": b"movieID\tgenre\n7\tDrama\n7\tComedy\n9\tDrama\n99\tHorror\n",
            "movie_directors.dat": b"movieID\tdirectorID\tdirectorName\n"
            b"7\tpedro_almodovar\tPedro Almod\xf3var\n12\tjohn_doe\tJohn Doe\n",
        },
        privileged={
            "genre": (["Comedy", "Drama"], [[0, 1], [1], []]),
            "director": (["john_doe", "pedro_almodovar"], [[1], [], [0]]),
        },
    ),
    Hetrec(
        name="hetrec-delicious",
        load=load_hetrec_delicious,
        item_column="bookmarkID",
        timestamps_file="user_taggedbookmarks-timestamps.dat",
        dates_file="user_taggedbookmarks.dat",
        timestamp_column="timestamp",
        date_columns=("day", "month", "year", "hour", "minute", "second"),
        tags_header=b"id\tvalue",
        extra_files={
            "bookmarks.dat": b"id\tmd5\ttitle\turl\tmd5Principal\turlPrincipal\n"
            b"7\ta1\tCaf\xe9 news\thttp://www.example.com/a\tb1\twww.example.com\n"
            b"9\ta2\tOther\thttp://www.other.org/\tb2\twww.other.org\n"
            b"12\ta3\tMore\thttp://www.example.com/b\tb1\twww.example.com\n"
            b"13\ta4\tUntagged\thttp://www.unused.net/\tb3\twww.unused.net\n"
        },
        privileged={
            "url_principal": (["www.example.com", "www.other.org"], [[0], [1], [0]]),
            "bookmark": (["7", "9", "12"], [[0], [1], [2]]),
        },
    ),
    Hetrec(
        name="hetrec-lastfm",
        load=load_hetrec_lastfm,
        item_column="artistID",
        timestamps_file="user_taggedartists-timestamps.dat",
        dates_file="user_taggedartists.dat",
        timestamp_column="timestamp",
        date_columns=("day", "month", "year"),
        tags_header=b"tagID\ttagValue",
        extra_files={"artists.dat": b"id\tname\turl\tpictureURL\n7\tCaf\xe9 Tacuba\tu\tp\n"},
        privileged={"artist": (["7", "9", "12"], [[0], [1], [2]])},
    ),
]
VARIANTS = ["timestamps", "dates"]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("hetrec", HETRECS, ids=[h.name for h in HETRECS])
def test_hetrec_contents(tmp_path: Path, hetrec: Hetrec, variant: str) -> None:
    data = hetrec.load(hetrec.write(tmp_path, variant))
    assert data.name == hetrec.name
    assert not data.explicit_negatives
    assert data.user_ids == ["5", "20"]
    assert data.item_ids == ["7", "9", "12"]
    assert data.tag_names == ["drama", "naïve", "café"]  # ordered by tag id 1, 3, 10
    assert data.inter_user.tolist() == [0, 0, 1, 1]
    assert data.inter_item.tolist() == [0, 2, 0, 1]
    assert data.inter_label.tolist() == [1, 1, 1, 1]
    assert data.inter_time.tolist() == hetrec.expected_times(variant)
    assert data.inter_tags.to_lists() == [[0], [2], [0, 1], [1]]
    assert data.item_tags.to_lists() == [[0, 1], [1], [2]]
    assert data.tag_counts.tolist() == [3, 2, 1]  # the repeated assignment counts twice
    assert fields(data) == hetrec.privileged


def test_hetrec_prefers_timestamps_file(tmp_path: Path) -> None:
    hetrec = HETRECS[0]
    hetrec.write(tmp_path, "dates")
    write(tmp_path / hetrec.dates_file, b"garbage that must not be read\n")
    hetrec.write(tmp_path, "timestamps")
    assert hetrec.load(tmp_path).inter_time.tolist() == hetrec.expected_times("timestamps")


def test_hetrec_movielens_optional_files_give_empty_fields(tmp_path: Path) -> None:
    hetrec = HETRECS[0]
    hetrec.write(tmp_path, "timestamps")
    (tmp_path / "movie_genres.dat").unlink()
    (tmp_path / "movie_directors.dat").unlink()
    data = hetrec.load(tmp_path)
    assert fields(data) == {"genre": ([], [[], [], []]), "director": ([], [[], [], []])}


def _replace_line(number: int, text: bytes) -> Callable[[bytes], bytes]:
    def edit(content: bytes) -> bytes:
        lines = content.split(b"\n")
        lines[number - 1] = text
        return b"\n".join(lines)

    return edit


HETREC_ERRORS: list[tuple[str, str, Callable[[bytes], bytes] | None, int | None, str]] = [
    # (id, "assignments" or a file name, edit of the file or None = delete, line, fragment)
    ("missing-column", "assignments", lambda c: c.replace(b"tagID", b"tag", 1), 1, "'tagID'"),
    (
        "wrong-separator",
        "tags.dat",
        lambda c: c.replace(b"\t", b","),
        1,
        "expected tab-separated, found ','",
    ),
    ("empty-file", "assignments", lambda c: b"", 1, "empty"),
    ("no-header", "assignments", lambda c: c.split(b"\n", 1)[1], 1, "must start with a header"),
    ("header-only", "assignments", lambda c: c.split(b"\n")[0] + b"\n", None, "no tag assignments"),
    ("non-numeric-id", "assignments", lambda c: c.replace(b"\n20\t9\t", b"\nx\t9\t"), 5, "'x'"),
    ("wrong-field-count", "assignments", _replace_line(3, b"5\t7\t1"), 3, "found 3"),
    ("row-separator", "assignments", _replace_line(4, b"5,7,1,2"), 4, "found ','"),
    ("unknown-tag", "assignments", lambda c: c.replace(b"\n20\t9\t3", b"\n20\t9\t77"), 5, "77"),
    ("duplicate-tag-id", "tags.dat", lambda c: c + b"3\tagain\n", 6, "defined twice"),
    ("missing-tags-file", "tags.dat", None, None, "'tags.dat' not found"),
    ("missing-assignments", "assignments", None, None, "not found"),
]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize(
    ("file", "edit", "line", "fragment"),
    [case[1:] for case in HETREC_ERRORS],
    ids=[case[0] for case in HETREC_ERRORS],
)
@pytest.mark.parametrize("hetrec", HETRECS, ids=[h.name for h in HETRECS])
def test_hetrec_errors(
    tmp_path: Path,
    hetrec: Hetrec,
    file: str,
    edit: Callable[[bytes], bytes] | None,
    line: int | None,
    fragment: str,
    variant: str,
) -> None:
    hetrec.write(tmp_path, variant)
    path = tmp_path / (hetrec.assignments_file(variant) if file == "assignments" else file)
    if edit is None:
        path.unlink()
        if file == "assignments":  # the error names the preferred file
            path = tmp_path / hetrec.timestamps_file
    else:
        write(path, edit(path.read_bytes()))
    with pytest.raises(DataFormatError) as error:
        hetrec.load(tmp_path)
    assert_error(error, path, line, fragment)


@pytest.mark.parametrize(
    ("row", "fragment"),
    [
        ("5\t7\t1\t30\t2\t2009", "'day': 30 is out of range"),  # 30 February
        ("5\t7\t1\t29\t2\t2009", "'day': 29 is out of range"),  # not a leap year
        ("5\t7\t1\t1\t13\t2009", "'month': 13 is out of range"),
        ("5\t7\t1\t1\t1\tyear", "'year'"),
    ],
)
def test_hetrec_bad_calendar_fields(tmp_path: Path, row: str, fragment: str) -> None:
    hetrec = HETRECS[2]  # lastfm: day month year only
    hetrec.write(tmp_path, "dates")
    path = tmp_path / hetrec.dates_file
    write(path, _replace_line(3, row.encode())(path.read_bytes()))
    with pytest.raises(DataFormatError) as error:
        hetrec.load(tmp_path)
    assert_error(error, path, 3, fragment)


def test_hetrec_bad_clock_field(tmp_path: Path) -> None:
    hetrec = HETRECS[1]  # delicious: with hour, minute, second
    hetrec.write(tmp_path, "dates")
    path = tmp_path / hetrec.dates_file
    write(path, _replace_line(2, b"5\t7\t1\t1\t1\t2009\t24\t0\t0")(path.read_bytes()))
    with pytest.raises(DataFormatError) as error:
        hetrec.load(tmp_path)
    assert_error(error, path, 2, "'hour': 24 is out of range")


def test_hetrec_negative_milliseconds_floor(tmp_path: Path) -> None:
    hetrec = HETRECS[2]
    hetrec.write(tmp_path, "timestamps")
    path = tmp_path / hetrec.timestamps_file
    write(path, b"userID\tartistID\ttagID\ttimestamp\n1\t1\t1\t-1500\n")
    assert hetrec.load(tmp_path).inter_time.tolist() == [-2]
