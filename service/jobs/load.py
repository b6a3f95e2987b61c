"""``python -m service load``: a bundle's users' features (``users.jsonl`` or its Parquet
shards, or ``--features``) into the feature store, and its ``themes.json`` under
``themes:{model_version}``.

Every record is validated against the bundle's model before anything is written (a bad
line or row stops the load with its file and line, leaving the store untouched); writes
are pipelined in batches, each user's hash replaced by one small Lua script (deleted and
rewritten atomically, never seen half-replaced), so re-running a load is idempotent. A
script per user, not a MULTI per batch, because on a Redis Cluster the users of a batch
live on every master and a transaction cannot span slots; the pipeline is redis-py's
ClusterPipeline there (non-transactional, one batch per master, sent in parallel).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from service.jobs.features_files import LoadError, feature_files, read_jsonl, read_records
from service.model import Bundle, FeatureSpec, Record
from service.store import Keys, SyncClient, encode_features

REPLACE_HASH = """
redis.call('DEL', KEYS[1])
return redis.call('HSET', KEYS[1], unpack(ARGV))
"""
"""One user's hash, replaced atomically. Sent with EVAL, not EVALSHA: a master restarted
or promoted during the load has no script cache, and the text is a few dozen bytes."""

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
    client: SyncClient,
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
            pipe = client.pipeline(transaction=False)
            for user_id, record in users[offset : offset + batch]:
                fields = [part for item in encode_features(record).items() for part in item]
                # execute_command: redis-py's ClusterPipeline has no eval()
                pipe.execute_command("EVAL", REPLACE_HASH, 1, keys.features(user_id), *fields)
            pipe.execute()
            bar.update(min(batch, len(users) - offset))
    if bundle.themes_path is not None:
        client.set(keys.themes(bundle.model_version), bundle.themes_path.read_bytes())
    source = files.described if files is not None else ""
    return LoadReport(
        len(users), bundle.themes_path is not None, time.perf_counter() - start, source
    )
