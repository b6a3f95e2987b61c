"""Errors raised on bad input data: they always name the file and, where known, the line."""

from __future__ import annotations

from pathlib import Path


class DataFormatError(ValueError):
    """A data file is missing, empty or malformed.

    ``str(err)`` reads ``path:line: message`` (or ``path: message`` when no line applies), the
    shape editors and terminals turn into a link to the offending line.
    """

    def __init__(self, path: str | Path, line: int | None, message: str) -> None:
        self.path = Path(path)
        self.line = line
        self.message = message
        where = f"{self.path}:{line}" if line is not None else str(self.path)
        super().__init__(f"{where}: {message}")
