"""``features``: a run's users' feature records as Parquet shards, without a new export.

The records are exactly those ``export`` writes to ``users.jsonl`` (the same history window
as the run's model), so fresh features of the same data can be scored by ``python -m service
precompute --engine ray --features DIR`` (or loaded with ``load --features DIR``) against the
bundle exported from that run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from training.export.shards import DEFAULT_SHARD_ROWS


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "features",
        help="write a run's users' feature records as Parquet shards",
        description="Write one row per user (user_id, split, features: the records of the "
        "bundle's users.jsonl) to OUT/part-NNNNN.parquet, at most --shard-rows rows each.",
    )
    p.add_argument("--run", type=Path, required=True, help="run directory written by `train`")
    p.add_argument("--out", type=Path, required=True, help="shard directory (its shards replaced)")
    p.add_argument(
        "--data", type=Path, help="prepared data set (default: the one the run was trained on)"
    )
    add_shard_rows(p)


def add_shard_rows(p: argparse.ArgumentParser) -> None:
    """``--shard-rows``, the same for ``features`` and ``export``."""
    p.add_argument(
        "--shard-rows",
        type=int,
        default=DEFAULT_SHARD_ROWS,
        help=f"users per Parquet shard ({DEFAULT_SHARD_ROWS:,})",
    )


def run(args: argparse.Namespace) -> int:
    from training.data.processed import ProcessedDataset
    from training.export.catalogue import user_feature_records
    from training.export.shards import write_user_shards

    config_path = args.run / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} is missing: is {args.run} a `training train` run?")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    data = ProcessedDataset.load(args.data or Path(config["data"]))
    records = user_feature_records(data, int(config["hyperparameters"]["max_history"]))
    paths = write_user_shards(args.out, records, rows_per_shard=args.shard_rows)
    print(f"wrote {data.n_users} users in {len(paths)} shard(s) to {args.out}")
    return 0
