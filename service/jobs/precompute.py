"""``python -m service precompute``: score every user in the feature store and write all
profiles to the cache, so the first request of each user is already a hit.

Users are read and written in pipelined batches (one round trip each way per batch) and
scored in one onnxruntime call per batch. Reading the next batch and encoding + writing the
previous one run in two threads while a batch is scored, so Redis does not dominate.
Users whose stored features no longer fit the model are skipped and counted.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from service.model import LoadedModel
from service.store import Keys, SyncClient, decode_features


@dataclass(frozen=True)
class PrecomputeReport:
    users: int
    skipped: int
    seconds: float
    model_seconds: float

    @property
    def rate(self) -> float:
        return self.users / self.seconds if self.seconds > 0 else 0.0


def user_keys(client: SyncClient, keys: Keys, scan_count: int = 1000) -> list[str]:
    """Every stored user's feature key; on a Redis Cluster the SCAN runs on every master
    (redis-py's cluster ``scan_iter``), since the per-user keys are spread over them."""
    return sorted(
        key.decode() for key in client.scan_iter(match=keys.features_pattern, count=scan_count)
    )


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for offset in range(0, len(items), size):
        yield items[offset : offset + size]


def precompute(
    model: LoadedModel,
    client: SyncClient,
    keys: Keys,
    *,
    ttl_s: int,
    jitter: float = 0.1,
    batch: int = 512,
    progress: bool = True,
) -> PrecomputeReport:
    start = time.perf_counter()
    feature_keys = user_keys(client, keys)
    chunks = list(_chunks(feature_keys, batch))
    written = skipped = 0
    model_seconds = 0.0
    pending: Future[None] | None = None
    with (
        ThreadPoolExecutor(max_workers=1) as reader,
        ThreadPoolExecutor(max_workers=1) as writer,
        tqdm(total=len(feature_keys), desc="precompute", unit="user", disable=not progress) as bar,
    ):
        # three stages overlap: read chunk i+1 | score chunk i | encode + write chunk i-1
        # (onnxruntime and socket I/O release the GIL)
        next_read = reader.submit(_read, client, chunks[0]) if chunks else None
        for i, chunk in enumerate(chunks):
            assert next_read is not None
            replies = next_read.result()
            if i + 1 < len(chunks):
                next_read = reader.submit(_read, client, chunks[i + 1])
            users, records = [], []
            for key, fields in zip(chunk, replies, strict=True):
                record = decode_features(fields) if fields else None
                if record is None or not model.spec.fits(record):
                    skipped += 1
                    continue
                users.append(keys.user_of_features_key(key))
                records.append(record)
            if records:
                tick = time.perf_counter()
                scores = model.score(records)
                model_seconds += time.perf_counter() - tick
                if pending is not None:
                    pending.result()
                pending = writer.submit(
                    write_profiles, client, keys, model, users, scores, ttl_s=ttl_s, jitter=jitter
                )
                written += len(users)
            bar.update(len(chunk))
        if pending is not None:
            pending.result()
    return PrecomputeReport(written, skipped, time.perf_counter() - start, model_seconds)


def _read(client: SyncClient, chunk: list[str]) -> list[dict[bytes, bytes]]:
    read = client.pipeline(transaction=False)
    for key in chunk:
        read.hgetall(key)
    return read.execute()


def write_profiles(
    client: SyncClient,
    keys: Keys,
    model: LoadedModel,
    users: list[str],
    scores: np.ndarray,
    *,
    ttl_s: int,
    jitter: float,
) -> None:
    """Cache the profiles of ``users`` (rows of ``scores``) in one pipelined round trip,
    each under its own key with a jittered TTL: the one writer of both engines. The pipeline
    is not a transaction and every command touches one user's key, so it works unchanged
    on a Redis Cluster (redis-py sends each node its share)."""
    blobs = model.profile_blobs(scores)
    pipe = client.pipeline(transaction=False)
    extra = np.random.default_rng(random.getrandbits(32)).random(len(users)) * jitter * ttl_s
    for user_id, blob, more in zip(users, blobs, extra.tolist(), strict=True):
        pipe.set(keys.profile(model.version, user_id), blob, ex=ttl_s + int(more))
    pipe.execute()
