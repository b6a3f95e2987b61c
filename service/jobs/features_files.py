"""Where the users' feature records of an offline job come from: a bundle's ``users.jsonl``
or its Parquet shards ``users/part-NNNNN.parquet``, or a file or shard folder given with
``--features``. A shard holds the records of ``users.jsonl`` as rows (``user_id``, ``split``,
``features`` struct), read in record batches (``load`` still validates every record before it
writes any, so it holds them all; the Ray engine streams shard by shard).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from service.model import Bundle, FeatureError, FeatureSpec, Record
from service.store import valid_user_id

SHARD_GLOB = "part-*.parquet"
READ_ROWS = 8192
"""Rows decoded at once when a shard is read here (``load``)."""


class LoadError(ValueError):
    """Users' features that cannot be loaded; the message names the file and line (or the
    shard and row)."""


@dataclass(frozen=True)
class FeatureFiles:
    """One source of feature records: a JSON lines file, or Parquet shards in name order."""

    jsonl: Path | None = None
    shards: tuple[Path, ...] = ()

    @property
    def described(self) -> str:
        if self.jsonl is not None:
            return str(self.jsonl)
        return f"{len(self.shards)} Parquet shard(s) in {self.shards[0].parent}"


def shards_in(folder: Path) -> tuple[Path, ...]:
    """The ``part-*.parquet`` shards of ``folder``, in name order; at least one."""
    if not folder.is_dir():
        raise LoadError(f"{folder}: no such directory of Parquet shards")
    shards = tuple(sorted(folder.glob(SHARD_GLOB)))
    if not shards:
        raise LoadError(
            f"{folder}: no {SHARD_GLOB} shards (write them with `python -m training features` "
            "or `export --users-format parquet`)"
        )
    return shards


def feature_files(bundle: Bundle, features: Path | None = None) -> FeatureFiles | None:
    """``features`` (a ``.jsonl`` file or a shard folder) when given, else the bundle's shards,
    else its ``users.jsonl``; None when the bundle has neither."""
    if features is not None:
        if not features.exists():
            raise LoadError(f"{features}: no such file or directory")
        if features.is_file():
            return FeatureFiles(jsonl=features)
        return FeatureFiles(shards=shards_in(features))
    if bundle.user_shards:
        return FeatureFiles(shards=bundle.user_shards)
    if bundle.users_path is not None:
        return FeatureFiles(jsonl=bundle.users_path)
    return None


def read_records(files: FeatureFiles, spec: FeatureSpec) -> Iterator[tuple[str, Record]]:
    """Validated (user_id, record) pairs of every file of ``files``, in order."""
    if files.jsonl is not None:
        yield from read_jsonl(files.jsonl, spec)
    for shard in files.shards:
        yield from read_shard(shard, spec)


def validated(user_id: Any, features: object, spec: FeatureSpec, where: str) -> Record:
    """The clean record of one row; raises :class:`LoadError` naming ``where``."""
    if not isinstance(user_id, str) or not valid_user_id(user_id):
        raise LoadError(f"{where}: user_id: expected 1-128 of A-Z a-z 0-9 _ . : @ -")
    try:
        return spec.validate(features, where="features")
    except FeatureError as error:
        raise LoadError(f"{where}: {error}") from None


def read_jsonl(path: Path, spec: FeatureSpec) -> Iterator[tuple[str, Record]]:
    """Validated (user_id, record) pairs of a users.jsonl file."""
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError as error:
                raise LoadError(f"{where}: not JSON ({error})") from None
            if not isinstance(row, dict):
                raise LoadError(f"{where}: expected an object")
            user_id = row.get("user_id")
            yield user_id, validated(user_id, row.get("features"), spec, where)


def read_shard(path: Path, spec: FeatureSpec) -> Iterator[tuple[str, Record]]:
    """Validated (user_id, record) pairs of one shard; errors name the shard and row."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        shard = pq.ParquetFile(path)
        names = set(shard.schema_arrow.names)
        if not {"user_id", "features"} <= names:
            raise LoadError(f"{path}: expected columns user_id and features, found {names}")
        row = 0
        for batch in shard.iter_batches(batch_size=READ_ROWS, columns=["user_id", "features"]):
            users = batch.column("user_id").to_pylist()
            for user_id, features in zip(users, batch.column("features").to_pylist(), strict=True):
                row += 1
                yield user_id, validated(user_id, features, spec, f"{path}: row {row}")
    except pa.ArrowException as error:  # not Parquet, truncated, unreadable
        raise LoadError(f"{path}: not a readable Parquet file ({error})") from None
