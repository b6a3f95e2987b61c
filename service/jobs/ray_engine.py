"""``python -m service precompute --engine ray``: score users' Parquet feature shards on Ray.

Ray Data reads the shards (``read_parquet``, one row per user) and streams record batches
to a pool of actors (``map_batches`` with a callable class): each actor loads the bundle
once (CUDA when Ray gave it a GPU), scores a batch in one onnxruntime call and writes the
profiles with the local engine's writer (:func:`~service.jobs.precompute.write_profiles`:
same bytes, keys and TTL). Actors return one small row per (batch, shard); the driver
counts them and, once every row of a shard is written, adds the shard's content hash to
``precompute:{model_version}:done``. A rerun skips those shards (``restart`` forgets them),
so a job killed half way resumes at shard granularity; writes are idempotent ``SET``s.

The done set expires no later than the first profiles of the run that created it, so it
never claims profiles Redis has already expired.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from service.jobs.features_files import LoadError, feature_files, validated
from service.jobs.precompute import PrecomputeReport, write_profiles
from service.model import Bundle, load_model
from service.model.bundle import file_sha256
from service.store import Keys, SyncClient, sync_client

LOCAL_OBJECT_STORE_BYTES = 1 << 30
"""Object store of a local Ray: batches stream through it, so 1 GiB is plenty and keeps the
default (30 % of RAM) from claiming a shared machine's memory."""


class EngineUnavailable(RuntimeError):
    """Ray (the ``scale`` extra) is not installed, or cannot score what was asked."""


@dataclass(frozen=True)
class Shard:
    path: Path
    id: str  # sha256 of the file: a rewritten shard is scored again
    rows: int
    bytes: int  # uncompressed, from the footer: what Ray Data sizes read units by


@dataclass(frozen=True)
class RayReport(PrecomputeReport):
    shards: int = 0  # scored by this run
    shards_done_before: int = 0  # skipped: finished by an earlier run
    actors: int = 0
    first_batch_s: float = 0.0  # start-up: Ray, the read, the actors' model loads

    @property
    def steady_rate(self) -> float:
        """Users per second once the first batch is back (start-up excluded)."""
        scoring = self.seconds - self.first_batch_s
        return self.users / scoring if scoring > 0 else 0.0


def shards_to_score(bundle: Bundle, features: Path | None) -> list[Shard]:
    """The shards of ``features`` (a shard folder), else of the bundle, with their ids and
    row counts (Parquet footers only). A bundle's shards were hash-checked by its loader:
    their ids come from the manifest."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = feature_files(bundle, features)
    if files is None or not files.shards:
        where = features or f"bundle {bundle.path}"
        raise LoadError(
            f"{where}: no Parquet feature shards to score; export with --users-format parquet "
            "(or both), write them with `python -m training features`, or pass --features DIR"
        )
    listed = {bundle.path / name: entry.sha256 for name, entry in bundle.manifest.files.items()}
    shards = []
    for path in files.shards:
        try:
            meta = pq.ParquetFile(path).metadata
        except (pa.ArrowException, OSError) as error:
            raise LoadError(f"{path}: not a readable Parquet file ({error})") from None
        size = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
        shards.append(Shard(path, listed.get(path) or file_sha256(path), meta.num_rows, size))
    return shards


class ShardScorer:
    """One actor of the pool: the model and a Redis client, made once, then batch after
    batch of rows scored and written. Bad rows are counted as skipped, like the local
    engine's users whose stored features no longer fit the model."""

    def __init__(
        self,
        bundle: str,
        device: str,
        max_k: int,
        intra_op_threads: int,
        redis_url: str,
        cluster: bool,
        prefix: str,
        ttl_s: int,
        jitter: float,
    ) -> None:
        self.model = load_model(
            bundle, device=device, max_k=max_k, intra_op_threads=intra_op_threads
        )
        self.client: SyncClient = sync_client(redis_url, cluster=cluster)
        self.keys = Keys(prefix)
        self.ttl_s, self.jitter = ttl_s, jitter

    def __call__(self, batch: Any) -> dict[str, np.ndarray]:
        """A pyarrow batch (user_id, features, path) -> per shard of it: rows, written."""
        paths = batch.column("path").to_pylist()
        users, records, kept = [], [], []
        rows = zip(
            batch.column("user_id").to_pylist(), batch.column("features").to_pylist(), strict=True
        )
        for i, (user_id, features) in enumerate(rows):
            try:
                records.append(validated(user_id, features, self.model.spec, "row"))
            except LoadError:
                continue
            users.append(user_id)
            kept.append(paths[i])
        seconds = 0.0
        if records:
            tick = time.perf_counter()
            scores = self.model.score(records)
            seconds = time.perf_counter() - tick
            write_profiles(
                self.client, self.keys, self.model, users, scores, ttl_s=self.ttl_s,
                jitter=self.jitter,
            )  # fmt: skip
        shards, counts = np.unique(np.asarray(paths, dtype=object), return_counts=True)
        written = [kept.count(shard) for shard in shards]
        return {
            "path": shards.astype(str),
            "rows": counts,
            "written": np.asarray(written, dtype=np.int64),
            "model_seconds": counts * (seconds / len(paths)),
        }


def import_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError:
        raise EngineUnavailable(
            "--engine ray needs Ray Data, which is not installed: pip install "
            "'tagprofile[scale]' (or `make install EXTRAS=cpu,train,dev,scale`)"
        ) from None
    return ray


def _settle_http_import() -> None:
    """Ray Data resolves the input paths in threads, each importing
    ``fsspec.implementations.http``. Where fsspec is installed without aiohttp that import
    fails, and failing concurrently it can surface as a plain ImportError ("cannot import
    name 'HTTPFileSystem'") that Ray 2.60 does not catch (it expects ModuleNotFoundError).
    Failing it once here, for good, makes every later attempt the expected error."""
    try:
        import fsspec.implementations.http  # noqa: F401
    except ImportError:
        sys.modules["fsspec.implementations.http"] = None  # type: ignore[assignment]


@contextmanager
def ray_session(address: str | None, num_cpus: int, progress: bool) -> Iterator[Any]:
    """Ray for one job: the cluster at ``address``, the one this process already joined, or
    a local Ray of ``num_cpus`` CPUs without a dashboard, shut down afterwards."""
    ray = import_ray()
    _settle_http_import()
    ray.data.DataContext.get_current().enable_progress_bars = progress
    if ray.is_initialized():
        yield ray
        return
    if address is not None:
        ray.init(address=address)
    else:
        ray.init(
            num_cpus=num_cpus,
            include_dashboard=False,
            object_store_memory=LOCAL_OBJECT_STORE_BYTES,
            log_to_driver=progress,
        )
    try:
        yield ray
    finally:
        ray.shutdown()


def resolve_device(device: str, num_gpus: float) -> str:
    """The actors' onnxruntime device: CUDA exactly when Ray gives each actor a GPU."""
    if num_gpus > 0 and device == "cpu":
        raise EngineUnavailable("--num-gpus > 0 with TAGPROFILE_DEVICE=cpu: choose one")
    if num_gpus <= 0 and device == "cuda":
        raise EngineUnavailable("TAGPROFILE_DEVICE=cuda needs GPUs for the actors: --num-gpus 1")
    return "cuda" if num_gpus > 0 else "cpu"


def precompute_on_ray(
    bundle: Bundle,
    redis_url: str,
    client: SyncClient,
    keys: Keys,
    *,
    cluster: bool = False,
    ttl_s: int,
    jitter: float = 0.1,
    max_k: int = 50,
    device: str = "auto",
    intra_op_threads: int = 0,
    features: Path | None = None,
    address: str | None = None,
    actors: int = 2,
    num_gpus: float = 0.0,
    batch: int = 512,
    restart: bool = False,
    progress: bool = True,
) -> RayReport:
    """Score every unfinished shard on Ray and cache its profiles; see the module doc.

    ``redis_url`` is what the actors connect to (reachable from every Ray node); ``client``
    is the driver's, for the done set. Without ``address`` a local Ray of ``actors`` + 1
    CPUs is started (one for reading) unless this process already joined one."""
    if actors < 1:
        raise ValueError(f"--actors must be >= 1, got {actors}")
    start = time.perf_counter()
    actor_device = resolve_device(device, num_gpus)
    shards = shards_to_score(bundle, features)
    done_key = keys.precompute_done(bundle.model_version)
    if restart:
        client.delete(done_key)
    done = {member.decode() for member in client.smembers(done_key)}
    todo = [shard for shard in shards if shard.id not in done]
    report = dict(shards_done_before=len(shards) - len(todo), actors=actors)
    if not todo:
        return RayReport(0, 0, time.perf_counter() - start, 0.0, **report)
    fresh_set = not done
    expires_at = int(time.time()) + ttl_s  # no profile of this run expires earlier
    by_path = {str(shard.path.resolve()): shard for shard in todo}  # as Ray's nodes see it
    seen = dict.fromkeys(by_path, 0)
    written = skipped = 0
    model_seconds = 0.0
    with ray_session(address, actors + 1, progress) as ray, _read_units_of(todo, ray):
        dataset = (
            ray.data.read_parquet(list(by_path), include_paths=True)
            .select_columns(["user_id", "features", "path"])  # not "split"
            .map_batches(
                ShardScorer,
                fn_constructor_kwargs=dict(
                    bundle=str(bundle.path.resolve()),
                    device=actor_device,
                    max_k=max_k,
                    intra_op_threads=intra_op_threads or 1,
                    redis_url=redis_url,
                    cluster=cluster,
                    prefix=keys.prefix,
                    ttl_s=ttl_s,
                    jitter=jitter,
                ),
                batch_size=batch,
                batch_format="pyarrow",
                compute=ray.data.ActorPoolStrategy(size=actors),
                num_cpus=1,
                num_gpus=num_gpus or None,
            )
        )
        first_batch_s = 0.0
        for out in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            first_batch_s = first_batch_s or time.perf_counter() - start
            for path, rows, ok, seconds in zip(
                out["path"], out["rows"], out["written"], out["model_seconds"], strict=True
            ):
                written += int(ok)
                skipped += int(rows - ok)
                model_seconds += float(seconds)
                known = _known(str(path), by_path)
                seen[known] += int(rows)
                if seen[known] == by_path[known].rows:
                    shard = by_path[known]
                    _mark_done(client, done_key, shard.id, expires_at if fresh_set else None)
    for path, shard in by_path.items():
        if shard.rows == 0:  # nothing to wait for
            _mark_done(client, done_key, shard.id, expires_at if fresh_set else None)
        elif seen[path] != shard.rows:
            raise RuntimeError(f"{path}: {seen[path]} of {shard.rows} rows came back from Ray")
    seconds = time.perf_counter() - start
    return RayReport(
        written, skipped, seconds, model_seconds, shards=len(todo), first_batch_s=first_batch_s,
        **report,
    )  # fmt: skip


@contextmanager
def _read_units_of(shards: list[Shard], ray: Any) -> Iterator[None]:
    """One read unit per shard. Ray Data's Parquet reader packs files into read tasks of up
    to ``target_max_block_size`` (128 MiB) of uncompressed data: small shards would all go
    to one task, hence one block, one busy actor and every result at the very end. Capping
    it at the largest shard gives a block (or more) per shard, so the actors share the work
    and each shard is marked done as soon as its rows are written."""
    context = ray.data.DataContext.get_current()
    before = context.target_max_block_size
    context.target_max_block_size = max(max(shard.bytes for shard in shards), 1 << 16)
    try:
        yield
    finally:
        context.target_max_block_size = before


def _known(path: str, by_path: dict[str, Shard]) -> str:
    """The shard a Ray output row names (Ray may report a path without its leading /)."""
    if path in by_path:
        return path
    return next(known for known in by_path if known.endswith(path))


def _mark_done(client: SyncClient, key: str, shard_id: str, expire_at: int | None) -> None:
    pipe = client.pipeline(transaction=False)  # one key: one node of a cluster
    pipe.sadd(key, shard_id)
    if expire_at is not None:
        pipe.expireat(key, expire_at)
    pipe.execute()
