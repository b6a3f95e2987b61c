"""Reading the delimited text files of the supported data sets, robustly and quickly.

Every loader goes through :func:`read_table` (files with a header line) or
:func:`read_headerless` (the MovieLens 10M ``::`` files) so that all of them share the same
guarantees: files that mix UTF-8 and Latin-1 line by line still decode, headers are matched
case-insensitively, and every problem becomes a :class:`DataFormatError` naming the file and
the 1-based line instead of a silently shifted column or a wrong number.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.data.errors import DataFormatError

Column = str | tuple[str, ...]
"""A column name, or a tuple of accepted spellings; the first spelling is the table's key."""

SEPARATOR_NAMES = {"\t": "tab", ",": "comma", ";": "semicolon", "|": "pipe", "::": "'::'"}
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True)
class Table:
    """The wanted columns of a delimited file, as strings, with the line of every row."""

    path: Path
    columns: dict[str, list[str]]
    lines: list[int]
    """1-based line number of each row (blank lines are skipped, so rows are not lines)."""

    def __len__(self) -> int:
        return len(self.lines)

    def has(self, column: str) -> bool:
        """Whether an optional column was present in the header."""
        return column in self.columns

    def strings(self, column: str) -> list[str]:
        return self.columns[column]

    def ints(self, column: str) -> np.ndarray:
        """The column as int64; a bad value raises with its line, column and text."""
        values = self.columns[column]
        try:
            return np.fromiter(map(int, values), dtype=np.int64, count=len(values))
        except (ValueError, OverflowError):
            for value, line in zip(values, self.lines, strict=True):
                parse_int(value, self.path, line, column)
            raise  # pragma: no cover - parse_int raised for the bad value above

    def floats(self, column: str) -> np.ndarray:
        """The column as finite float64; a bad value raises with its line, column and text."""
        values = self.columns[column]
        try:
            result = np.fromiter(map(float, values), dtype=np.float64, count=len(values))
        except ValueError:
            result = None
        if result is None or not np.isfinite(result).all():
            for value, line in zip(values, self.lines, strict=True):
                parse_float(value, self.path, line, column)
            raise AssertionError("unreachable: parse_float raised for the bad value")
        return result

    def error(self, row: int, message: str) -> DataFormatError:
        """An error pointing at the line of data row ``row``."""
        return DataFormatError(self.path, self.lines[row], message)


def parse_int(value: str, path: str | Path, line: int | None, column: str) -> int:
    """``int(value)``, or a DataFormatError naming file, line, column and the bad value."""
    try:
        number = int(value)
    except ValueError:
        raise DataFormatError(
            path, line, f"column {column!r}: expected an integer, found {value!r}"
        ) from None
    if not _INT64_MIN <= number <= _INT64_MAX:
        raise DataFormatError(path, line, f"column {column!r}: {value!r} does not fit in int64")
    return number


def parse_float(value: str, path: str | Path, line: int | None, column: str) -> float:
    """``float(value)`` for finite numbers, or a DataFormatError naming where and what."""
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise DataFormatError(path, line, f"column {column!r}: expected a number, found {value!r}")
    return number


def decode_lines(data: bytes) -> list[str]:
    """Split raw bytes into lines, each decoded as UTF-8 or, failing that, as Latin-1.

    Real HetRec files mix both encodings within one file, so a whole-file decode either fails
    or garbles one kind. Splitting happens on bytes: a Latin-1 byte such as 0x85 must never
    count as a line break (``str.splitlines`` would).
    """
    newline = b"\n" if b"\n" in data or b"\r" not in data else b"\r"  # old Mac files: CR only
    try:
        lines = data.decode("utf-8").split(newline.decode())
    except UnicodeDecodeError:
        lines = [_decode_line(raw) for raw in data.split(newline)]
    if b"\r" in data and newline == b"\n":
        lines = [line.removesuffix("\r") for line in lines]
    if lines:
        lines[0] = lines[0].removeprefix("\ufeff")
    if lines and not lines[-1]:
        lines.pop()
    return lines


def _decode_line(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def read_table(
    path: str | Path,
    sep: str,
    required: Sequence[Column],
    *,
    optional: Sequence[Column] = (),
    quoted: bool = False,
) -> Table:
    """Read a delimited file with a header line and return the wanted columns.

    ``sep`` is the field separator; ``quoted`` enables CSV quoting (MovieLens titles contain
    commas). Columns are matched case-insensitively; a missing required column, a wrong
    separator, an empty file or a row with the wrong number of fields raises
    :class:`DataFormatError` with the offending line.
    """
    path = Path(path)
    lines = decode_lines(_read_bytes(path))
    numbered = [(number, line) for number, line in enumerate(lines, 1) if line.strip()]
    if not numbered:
        wanted = ", ".join(_key(column) for column in required)
        raise DataFormatError(path, 1, f"file is empty; expected a header line with {wanted}")
    header_line, header_text = numbered[0]
    body = numbered[1:]
    use_csv = quoted and any('"' in line for _, line in numbered)
    header = _split_csv([numbered[0]])[0][1] if use_csv else header_text.split(sep)
    positions = _match_header(path, header_line, header, sep, required, optional)
    rows, row_lines = _split_rows(body, sep, use_csv)
    _check_field_counts(path, rows, row_lines, header, sep)
    fields = list(zip(*rows, strict=True)) if rows else [() for _ in header]
    columns = {key: list(fields[index]) for key, index in positions.items()}
    return Table(path, columns, row_lines)


def read_headerless(path: str | Path, sep: str, columns: Sequence[str], *, free: str) -> Table:
    """Read a file without a header line whose one free-text column may hold ``sep``'s characters.

    MovieLens 10M separates fields with ``::`` and does not quote, so a tag or title such as
    ``:-)`` makes ``a:::-)::b``. Every other column is an id, a number or a ``|`` list, so the
    fields left of ``free`` are split off from the left and those right of it from the right;
    a free field that still contains ``sep`` means a wrong number of fields.
    """
    path = Path(path)
    numbered = [
        (number, line)
        for number, line in enumerate(decode_lines(_read_bytes(path)), 1)
        if line.strip()
    ]
    if not numbered:
        raise DataFormatError(path, None, f"file is empty; expected lines {sep.join(columns)}")
    left = list(columns).index(free)
    right = len(columns) - left - 1
    rows = []
    for number, line in numbered:
        fields = line.split(sep, left)
        fields[left:] = fields[left].rsplit(sep, right) if len(fields) > left else []
        if len(fields) != len(columns) or sep in fields[left]:
            if len(fields) < 2:
                _check_separator(path, number, line, sep)
            raise DataFormatError(
                path,
                number,
                f"expected {len(columns)} {SEPARATOR_NAMES.get(sep, repr(sep))}-separated fields "
                f"({sep.join(columns)}), found {len(line.split(sep))}",
            )
        rows.append(fields)
    values = list(zip(*rows, strict=True))
    return Table(
        path, {name: list(values[i]) for i, name in enumerate(columns)}, [n for n, _ in numbered]
    )


def _read_bytes(path: Path) -> bytes:
    if not path.parent.is_dir():
        raise DataFormatError(path.parent, None, "data directory not found")
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataFormatError(
            path, None, f"required file {path.name!r} not found in {path.parent}"
        ) from None
    except IsADirectoryError:
        raise DataFormatError(path, None, "expected a file, found a directory") from None


def _key(column: Column) -> str:
    return column if isinstance(column, str) else column[0]


def _match_header(
    path: Path,
    line: int,
    header: list[str],
    sep: str,
    required: Sequence[Column],
    optional: Sequence[Column],
) -> dict[str, int]:
    """Map each wanted column's key to its position in the header."""
    index = {}
    for position, name in enumerate(header):
        index.setdefault(name.strip().lower(), position)
    positions: dict[str, int] = {}
    missing = []
    for column, is_required in [(c, True) for c in required] + [(c, False) for c in optional]:
        spellings = (column,) if isinstance(column, str) else column
        found = [index[s.lower()] for s in spellings if s.lower() in index]
        if found:
            positions[_key(column)] = found[0]
        elif is_required:
            missing.append(" or ".join(repr(s) for s in spellings))
    if missing:
        if len(header) == 1 and len(required) > 1:
            _check_separator(path, line, header[0], sep)
        hint = ""
        if all(_is_number(field) for field in header):
            hint = " (the file must start with a header line)"
        raise DataFormatError(
            path,
            line,
            f"header lacks required column(s) {', '.join(missing)}; "
            f"header found: {sep.join(header)!r}{hint}",
        )
    return positions


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _check_separator(path: Path, line: int, text: str, sep: str) -> None:
    """Raise when ``text`` holds no ``sep`` but another usual separator (wrong file kind)."""
    if sep in text:
        return
    for other in SEPARATOR_NAMES:
        if other != sep and other in text:
            shown = "tab" if other == "\t" else repr(other)
            raise DataFormatError(
                path, line, f"expected {SEPARATOR_NAMES[sep]}-separated, found {shown}"
            )


def _split_rows(
    body: list[tuple[int, str]], sep: str, use_csv: bool
) -> tuple[list[list[str]], list[int]]:
    if use_csv:
        records = _split_csv(body)
        return [fields for _, fields in records], [number for number, _ in records]
    return [line.split(sep) for _, line in body], [number for number, _ in body]


def _split_csv(numbered: list[tuple[int, str]]) -> list[tuple[int, list[str]]]:
    """Parse CSV records (quoted fields may span lines); each keeps its first line number."""
    reader = csv.reader(line + "\n" for _, line in numbered)
    records = []
    consumed = 0
    for fields in reader:
        records.append((numbered[consumed][0], fields))
        consumed = reader.line_num
    return records


def _check_field_counts(
    path: Path, rows: list[list[str]], lines: list[int], header: list[str], sep: str
) -> None:
    """Every row must have the header's number of fields; trailing empty extras are dropped."""
    width = len(header)
    for row_index in [i for i, row in enumerate(rows) if len(row) != width]:
        row = rows[row_index]
        if len(row) > width and not "".join(row[width:]).strip():
            del row[width:]
            continue
        line = lines[row_index]
        if len(row) == 1 and width > 1:
            _check_separator(path, line, row[0], sep)
        raise DataFormatError(
            path,
            line,
            f"expected {width} {SEPARATOR_NAMES[sep]}-separated fields "
            f"({', '.join(header)}), found {len(row)}",
        )
