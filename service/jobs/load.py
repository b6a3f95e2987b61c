"""``python -m service load``: a bundle's ``users.jsonl`` into the feature store and its
``themes.json`` under ``themes:{model_version}``.

Every record is validated against the bundle's model before anything is written (a bad
line stops the load with its file and line, leaving the store untouched); writes are
pipelined in batches of MULTI/EXEC transactions (each user's hash is deleted and rewritten,
never seen half-replaced), so re-running a load is idempotent.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import redis
from tqdm import tqdm

from service.model import Bundle, FeatureError, FeatureSpec, Record
from service.store import Keys, encode_features, valid_user_id


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
    client: redis.Redis,
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
            pipe = client.pipeline(transaction=True)  # MULTI: no half-replaced user
            for user_id, record in users[offset : offset + batch]:
                key = keys.features(user_id)
                pipe.delete(key)
                pipe.hset(key, mapping=encode_features(record))
            pipe.execute()
            bar.update(min(batch, len(users) - offset))
    if bundle.themes_path is not None:
        client.set(keys.themes(bundle.model_version), bundle.themes_path.read_bytes())
    return LoadReport(len(users), bundle.themes_path is not None, time.perf_counter() - start)
