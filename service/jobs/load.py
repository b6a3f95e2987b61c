"""``python -m service load``: a bundle's ``users.jsonl`` into the feature store and its
``themes.json`` under ``themes:{model_version}``.

Every record is validated against the bundle's model before anything is written (a bad
line stops the load with its file and line, leaving the store untouched); writes are
pipelined in batches, each user's hash replaced by one small Lua script (deleted and
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

import orjson
from tqdm import tqdm

from service.model import Bundle, FeatureError, FeatureSpec, Record
from service.store import Keys, SyncClient, encode_features, valid_user_id

REPLACE_HASH = """
redis.call('DEL', KEYS[1])
return redis.call('HSET', KEYS[1], unpack(ARGV))
"""
"""One user's hash, replaced atomically. Sent with EVAL, not EVALSHA: a master restarted
or promoted during the load has no script cache, and the text is a few dozen bytes."""


class LoadError(ValueError):
    """A users.jsonl line that cannot be loaded; the message has the file and line."""


@dataclass(frozen=True)
class LoadReport:
    users: int
    themes: bool
    seconds: float


def read_users(path: Path, spec: FeatureSpec) -> Iterator[tuple[str, Record]]:
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
            if not isinstance(user_id, str) or not valid_user_id(user_id):
                raise LoadError(f"{where}: user_id: expected 1-128 of A-Z a-z 0-9 _ . : @ -")
            try:
                yield user_id, spec.validate(row.get("features"), where="features")
            except FeatureError as error:
                raise LoadError(f"{where}: {error}") from None


def load_into_redis(
    bundle: Bundle,
    client: SyncClient,
    keys: Keys,
    *,
    batch: int = 1000,
    progress: bool = True,
) -> LoadReport:
    start = time.perf_counter()
    spec = FeatureSpec.from_manifest(bundle.manifest)
    users = list(read_users(bundle.users_path, spec)) if bundle.users_path else []
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
    return LoadReport(len(users), bundle.themes_path is not None, time.perf_counter() - start)
