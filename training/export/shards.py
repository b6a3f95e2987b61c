"""Users' feature records as Parquet shards: ``users/part-NNNNN.parquet``.

The same records as ``users.jsonl`` (``user_id``, ``split``, ``features``), one row per user,
in shards of a bounded number of rows, so that readers at scale (Ray Data, the service's
``load``) stream them shard by shard, in parallel, and can resume per shard. ``features`` is
a struct column with one list column per model input: ids and attributes as int64, weights
(``*_w``) as float64, so values round-trip exactly as in the JSON lines.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pyarrow loads when shards are written: the CLI's --help stays quick
    import pyarrow as pa

SHARDS_DIR = "users"
"""Where a bundle keeps its shards (DESIGN §5): ``BUNDLE/users/part-NNNNN.parquet``."""
DEFAULT_SHARD_ROWS = 100_000


def shard_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def features_schema(features: dict[str, Any]) -> pa.Schema:
    """The table schema for records whose ``features`` have these keys (from one record)."""
    import pyarrow as pa

    fields = [
        pa.field(name, pa.list_(pa.float64() if name.endswith("_w") else pa.int64()))
        for name in features
    ]
    return pa.schema(
        [
            pa.field("user_id", pa.string(), nullable=False),
            pa.field("split", pa.string()),
            pa.field("features", pa.struct(fields)),
        ]
    )


def _batches(records: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    iterator = iter(records)
    while batch := list(islice(iterator, size)):
        yield batch


def write_user_shards(
    folder: Path | str, records: Iterable[dict[str, Any]], *, rows_per_shard: int
) -> list[Path]:
    """Write ``records`` (``user_feature_records``) as shards of at most ``rows_per_shard``
    rows into ``folder`` (created; its old ``part-*.parquet`` removed first); returns the
    shard paths in order. Each shard is written to a temporary name and renamed, so a
    reader never sees half a shard."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if rows_per_shard < 1:
        raise ValueError(f"rows per shard must be >= 1, got {rows_per_shard}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("part-*.parquet"):
        old.unlink()
    paths: list[Path] = []
    schema: pa.Schema | None = None
    for index, batch in enumerate(_batches(records, rows_per_shard)):
        schema = schema or features_schema(batch[0]["features"])
        table = pa.Table.from_pylist(
            [{name: row.get(name) for name in ("user_id", "split", "features")} for row in batch],
            schema=schema,
        )
        path = folder / shard_name(index)
        tmp = path.with_name(path.name + ".tmp")
        pq.write_table(table, tmp, compression="zstd")
        tmp.replace(path)
        paths.append(path)
    return paths
