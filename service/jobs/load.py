"""``python -m service load``: a bundle's users' features (``users.jsonl`` or its Parquet
shards, or ``--features``) into the feature store, and its ``themes.json`` under
``themes:{model_version}``.

Every record is validated against the bundle's model before anything is written (a bad
line or row stops the load with its file and line, leaving the store untouched); writes
are pipelined in batches of MULTI/EXEC transactions (each user's hash is deleted and
rewritten, never seen half-replaced), so re-running a load is idempotent.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import redis
from tqdm import tqdm

from service.jobs.features_files import LoadError, feature_files, read_jsonl, read_records
from service.model import Bundle, FeatureSpec, Record
from service.store import Keys, encode_features

__all__ = ["LoadError", "LoadReport", "load_into_redis", "read_users"]


@dataclass(frozen=True)
class LoadReport:
    users: int
    themes: bool
    seconds: float
    source: str = ""  # where the features came from ("" when the bundle has none)


def read_users(path: Path, spec: FeatureSpec) -> Iterator[tuple[str, Record]]:
    """Validated (user_id, record) pairs of a users.jsonl file."""
    return read_jsonl(path, spec)


def load_into_redis(
    bundle: Bundle,
    client: redis.Redis,
    keys: Keys,
    *,
    batch: int = 1000,
    progress: bool = True,
    features: Path | None = None,
) -> LoadReport:
    """Load the users of ``features`` (a users.jsonl file or a folder of Parquet shards;
    default: the bundle's shards, else its users.jsonl) and the bundle's themes."""
    start = time.perf_counter()
    spec = FeatureSpec.from_manifest(bundle.manifest)
    files = feature_files(bundle, features)
    users = list(read_records(files, spec)) if files is not None else []
    with tqdm(total=len(users), desc="load users", unit="user", disable=not progress) as bar:
        for offset in range(0, len(users), batch):
            pipe = client.pipeline(transaction=True)  # MULTI: no half-replaced user
            for user_id, record in users[offset : offset + batch]:
                key = keys.features(user_id)
                pipe.delete(key)
                pipe.hset(key, mapping=encode_features(record))
            pipe.execute()
            bar.update(min(batch, len(users) - offset))
    if bundle.themes_path is not None:
        client.set(keys.themes(bundle.model_version), bundle.themes_path.read_bytes())
    source = files.described if files is not None else ""
    return LoadReport(
        len(users), bundle.themes_path is not None, time.perf_counter() - start, source
    )
