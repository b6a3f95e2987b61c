"""The service under load, on loopback only: cached GET, cache-miss path, precompute.

Starts its own embedded Redis (no persistence) and its own uvicorn servers on free
127.0.0.1 ports, drives them with a minimal asyncio HTTP/1.1 load generator (one keep-alive
connection per client, raw ``asyncio.open_connection``, so that on 2 cores the client costs
little next to the server), and always stops everything it started.

1. cached ``GET /users/{id}/tags?k=5``, 32 clients, every profile cached (users loaded,
   then ``precompute``): the service vs ``bare_redis_app.py`` (FastAPI + one Redis GET of
   the same key). Goal: service ≥ 0.8× bare.
2. cache misses, 64 clients, every request a user never requested before (fresh key
   prefix per round, users loaded under it first): micro-batched (max batch 64, 2 ms)
   vs batching off (max batch 1). Goal: ≥ 3×. Mean batch size from ``/metrics``.
3. ``precompute`` of every user (Redis reads, model, top-k, encoding, Redis writes) vs the
   same batches through ``model.score`` alone, in this process. Goal: ≥ 0.7×.

The machine is shared and noisy, so compared configurations run side by side: both servers
are up, and the load alternates between them every ``--slice`` seconds (A B B A ...) until
each has had ``--seconds``; precompute and its baseline alternate per round. The median of
``--rounds`` rounds is reported. Bundles ship fewer users than a useful run needs (2,000 in
synthetic-ctmvm), so users are replicated under distinct ids (``<user>.<tag><copy>``, same
features); every id is requested at most once in the cache-miss benchmark.

    .venv/bin/python benchmarks/bench_service.py --bundle artifacts/bundles/synthetic-ctmvm \\
        --seconds 10 --out artifacts/bench/service.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import ctypes.util
import http.client
import ipaddress
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import onnxruntime as ort
import orjson
import redis

from service.jobs import precompute, read_users, user_keys
from service.model import FeatureSpec, LoadedModel, Record, load_bundle, load_model, top_k
from service.store import EmbeddedRedis, Keys, decode_features, encode_features, free_port

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
MAX_SECONDS = 60.0
"""Hard cap on one measured phase, whatever ``--seconds`` says."""
MAX_REQUESTS = 2_000_000
"""Hard cap on the requests of one phase."""
MAX_ROUNDS = 10
REQUEST_TIMEOUT_S = 30.0
"""A request without a response by then is an error (so a hung server cannot hang us)."""
READY_TIMEOUT_S = 90.0
GOALS = {"cached": 0.8, "miss": 3.0, "precompute": 0.7}


# -- loopback guard ------------------------------------------------------------------------


def require_loopback(host: str) -> str:
    """``host`` if it is a loopback address; this benchmark never talks to anything else."""
    bare = host.strip("[]")
    loopback = bare == "localhost"
    if not loopback:
        try:
            loopback = ipaddress.ip_address(bare).is_loopback
        except ValueError:
            loopback = False
    if not loopback:
        raise ValueError(f"refusing non-loopback address {host!r}: this benchmark is local only")
    return host


def require_loopback_url(url: str) -> str:
    require_loopback(urlsplit(url).hostname or "")
    return url


# -- load generator ------------------------------------------------------------------------


@dataclass
class LoadResult:
    """One phase of load: what was sent, what came back, how long each request took."""

    clients: int
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    statuses: dict[int, int] = field(default_factory=dict)
    first_error: str | None = None
    cpu_s: dict[str, float] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list, repr=False)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) * 1000 if self.latencies else float("nan")

    def summary(self) -> dict[str, Any]:
        per_request = {
            f"{name}_cpu_us_per_request": round(seconds / self.requests * 1e6, 1)
            for name, seconds in self.cpu_s.items()
            if self.requests
        }
        return {
            "clients": self.clients,
            "requests": self.requests,
            "errors": self.errors,
            "seconds": round(self.seconds, 3),
            "rps": round(self.rps, 1),
            "p50_ms": round(self.percentile_ms(50), 3),
            "p99_ms": round(self.percentile_ms(99), 3),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "first_error": self.first_error,
            "cpu_s": {name: round(seconds, 3) for name, seconds in self.cpu_s.items()},
            **per_request,
        }


class ProtocolError(Exception):
    """A response this client cannot frame (no Content-Length)."""


@dataclass
class _Shared:
    """State the clients of one phase share (one event loop: no locks needed)."""

    next_path: Callable[[], str | None]
    result: LoadResult
    budget: int
    deadline: float = float("inf")
    connected: int = 0
    ready: asyncio.Event = field(default_factory=asyncio.Event)


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """(status, keep-alive) of one response; the body is read and dropped."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    at = lower.find(b"\r\ncontent-length:")
    if at < 0:
        raise ProtocolError(f"no Content-Length in {bytes(head[:200])!r}")
    end = lower.index(b"\r\n", at + 2)
    await reader.readexactly(int(lower[at + 17 : end]))
    return status, b"\r\nconnection: close" not in lower


async def _client(host: str, port: int, shared: _Shared) -> None:
    """One client: one keep-alive connection, requests back to back until the deadline,
    the budget or the paths run out. A non-200 is an error; so is a broken connection
    (then the client reconnects and goes on)."""
    tail = f" HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    result, clock = shared.result, time.perf_counter
    reader, writer = await asyncio.open_connection(host, port)
    shared.connected += 1
    await shared.ready.wait()
    try:
        while shared.budget > 0 and clock() < shared.deadline:
            path = shared.next_path()
            if path is None:
                break
            shared.budget -= 1
            request = b"GET " + path.encode() + tail
            start = clock()
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT_S):  # a hung server ends the phase
                    writer.write(request)
                    status, keep_alive = await _read_response(reader)
            except (OSError, asyncio.IncompleteReadError, ProtocolError, ValueError) as error:
                # TimeoutError is an OSError: it counts as an error too.
                result.requests += 1
                result.errors += 1
                result.statuses[0] = result.statuses.get(0, 0) + 1
                result.first_error = result.first_error or f"{type(error).__name__}: {error}"
                writer.close()
                await asyncio.sleep(0.01)
                reader, writer = await asyncio.open_connection(host, port)
                continue
            result.latencies.append(clock() - start)
            result.requests += 1
            result.statuses[status] = result.statuses.get(status, 0) + 1
            if status != 200:
                result.errors += 1
                result.first_error = result.first_error or f"HTTP {status} for {path}"
            if not keep_alive:
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _load(
    host: str,
    port: int,
    next_path: Callable[[], str | None],
    clients: int,
    seconds: float,
    max_requests: int,
) -> LoadResult:
    shared = _Shared(next_path, LoadResult(clients), min(max_requests, MAX_REQUESTS))
    tasks = [asyncio.create_task(_client(host, port, shared)) for _ in range(clients)]
    try:
        # Every client connects first; then the clock starts for all of them at once.
        while shared.connected < clients:
            failed = [t for t in tasks if t.done() and t.exception() is not None]
            if failed:
                raise failed[0].exception()  # type: ignore[misc]
            await asyncio.sleep(0.005)
        start = time.perf_counter()
        shared.deadline = start + min(seconds, MAX_SECONDS)
        shared.ready.set()
        await asyncio.gather(*tasks)
        shared.result.seconds = time.perf_counter() - start
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return shared.result


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_load(
    host: str,
    port: int,
    paths: Iterator[str],
    *,
    clients: int,
    seconds: float,
    max_requests: int = MAX_REQUESTS,
    watch: dict[str, int] | None = None,
) -> LoadResult:
    """Drive ``clients`` keep-alive connections with ``paths`` for ``seconds`` (or until
    the paths or ``max_requests`` run out; both capped by MAX_SECONDS and MAX_REQUESTS).
    ``watch`` names processes whose CPU time over the phase is recorded (this one is
    always recorded as ``client``): it shows where the cores went."""
    require_loopback(host)
    pids = {"client": os.getpid(), **(watch or {})}
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    result = asyncio.run(
        _load(host, port, lambda: next(paths, None), clients, seconds, max_requests)
    )
    result.cpu_s = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
    return result


# -- servers -------------------------------------------------------------------------------


def _death_signal() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGTERM the child if this process dies (even by
    SIGKILL), so no server outlives the benchmark."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG


class Server:
    """A uvicorn subprocess on a loopback port, its output in a log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], port: int, logs: Path):
        self.name, self.argv, self.env, self.port = name, argv, env, port
        self.log_path = logs / f"{name}-{port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = READY_TIMEOUT_S) -> Server:
        """Spawn and wait until ``/readyz`` answers 200 (or fail with the log's tail)."""
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_death_signal(),
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}"
                )
            with contextlib.suppress(OSError, http.client.HTTPException):
                status, _ = self.get("/readyz")
                if status == 200:
                    return self
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not ready after {timeout:g} s:\n{self.tail()}")
            time.sleep(0.1)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def get(self, path: str) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection(require_loopback(HOST), self.port, timeout=10)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def metrics(self) -> dict[str, float]:
        status, body = self.get("/metrics")
        if status != 200:
            raise RuntimeError(f"{self.name}: /metrics answered {status}")
        samples = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                samples[key] = float(value)
        return samples

    def tail(self, lines: int = 25) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM (uvicorn shuts down gracefully), SIGKILL after 10 s; idempotent."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Launcher:
    """Builds identically configured servers: same interpreter, uvicorn defaults (1
    worker, no access log), ``OMP_NUM_THREADS``, device and onnxruntime threads."""

    bundle: Path
    redis_url: str
    logs: Path
    omp_threads: int
    intra_op_threads: int
    device: str

    def _env(self, extra: dict[str, str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TAGPROFILE_", "BARE_"))}
        env["OMP_NUM_THREADS"] = str(self.omp_threads)
        env["PYTHONUNBUFFERED"] = "1"
        return env | extra

    def service(
        self, prefix: str, *, max_batch: int, batch_wait_ms: float = 2.0, workers: int = 1
    ) -> Server:
        """``python -m service serve`` with the benchmark's settings."""
        port = free_port(HOST)
        env = self._env(
            {
                "TAGPROFILE_KEY_PREFIX": prefix,
                "TAGPROFILE_MAX_BATCH": str(max_batch),
                "TAGPROFILE_BATCH_WAIT_MS": str(batch_wait_ms),
                "TAGPROFILE_INTRA_OP_THREADS": str(self.intra_op_threads),
                "TAGPROFILE_DEVICE": self.device,
            }
        )
        command = [
            "serve",
            "--bundle",
            str(self.bundle),
            "--host",
            HOST,
            "--port",
            str(port),
            "--redis-url",
            self.redis_url,
            "--workers",
            str(workers),
        ]
        argv = [sys.executable, "-m", "service", *command]
        return Server(f"service-b{max_batch}-w{workers}", argv, env, port, self.logs)

    def bare(self, key_template: str) -> Server:
        port = free_port(HOST)
        env = self._env({"BARE_REDIS_URL": self.redis_url, "BARE_KEY_TEMPLATE": key_template})
        argv = [
            sys.executable,
            "-m",
            "uvicorn",
            "--app-dir",
            str(ROOT / "benchmarks"),
            "bare_redis_app:app",
            "--host",
            HOST,
            "--port",
            str(port),
            "--workers",
            "1",
            "--no-access-log",
        ]
        return Server("bare", argv, env, port, self.logs)


# -- users ---------------------------------------------------------------------------------

Users = list[tuple[str, dict[str, bytes]]]


def base_users(bundle_dir: Path) -> Users:
    """The bundle's users (validated like ``load`` does), features encoded for HSET."""
    bundle = load_bundle(bundle_dir)
    if bundle.users_path is None:
        raise SystemExit(f"{bundle_dir} has no users.jsonl")
    spec = FeatureSpec.from_manifest(bundle.manifest)
    return [(uid, encode_features(record)) for uid, record in read_users(bundle.users_path, spec)]


def replicate(base: Users, count: int, tag: str) -> Users:
    """``count`` users with distinct ids ``<user>.<tag><copy>`` cycling over ``base``."""
    n = len(base)
    return [(f"{base[i % n][0]}.{tag}{i // n}", base[i % n][1]) for i in range(count)]


def load_users(client: redis.Redis, keys: Keys, users: Users, batch: int = 1000) -> None:
    """Feature hashes under a fresh prefix (what ``load`` writes, without its MULTI/DEL)."""
    for offset in range(0, len(users), batch):
        pipe = client.pipeline(transaction=False)
        for uid, fields in users[offset : offset + batch]:
            pipe.hset(keys.features(uid), mapping=fields)  # type: ignore[arg-type]
        pipe.execute()


def drop_prefix(client: redis.Redis, prefix: str) -> None:
    """Free a finished round's keys, so Redis stays small over many rounds."""
    batch: list[bytes] = []
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            client.unlink(*batch)
            batch.clear()
    if batch:
        client.unlink(*batch)


def tag_paths(users: Sequence[str]) -> list[str]:
    return [f"/users/{uid}/tags?k=5" for uid in users]


def cycle_from(items: list[str], offset: int) -> Iterator[str]:
    """Endless round-robin over ``items`` starting at ``offset``."""
    n = len(items)
    i = offset
    while True:
        yield items[i % n]
        i += 1


def delta(after: dict[str, float], before: dict[str, float], key: str) -> float:
    return after.get(key, 0.0) - before.get(key, 0.0)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


# -- benchmarks ----------------------------------------------------------------------------


def bench_precompute(
    model: LoadedModel, client: redis.Redis, keys: Keys, rounds: int, batch: int
) -> dict[str, Any]:
    """precompute end to end vs ``model.score`` over the same batches (no Redis), plus
    score + top-k + encoding (no Redis) to show where the difference goes."""
    batches: list[list[Record]] = []
    feature_keys = user_keys(client, keys)
    for offset in range(0, len(feature_keys), batch):
        pipe = client.pipeline(transaction=False)
        for key in feature_keys[offset : offset + batch]:
            pipe.hgetall(key)
        batches.append([decode_features(fields) for fields in pipe.execute()])
    users = sum(len(b) for b in batches)
    model.score(batches[0])  # warm-up: first-run allocations of onnxruntime

    def score_only() -> float:
        start = time.perf_counter()
        for records in batches:
            model.score(records)
        return users / (time.perf_counter() - start)

    def score_encode() -> float:
        start = time.perf_counter()
        for records in batches:
            ids, values = top_k(model.score(records), model.max_k)
            [model.codec.encode(i, v) for i, v in zip(ids, values, strict=True)]
        return users / (time.perf_counter() - start)

    rates: dict[str, list[float]] = {"precompute": [], "model.score": [], "score+top_k+encode": []}
    model_share: list[float] = []
    for r in range(rounds):
        for name in ("precompute", "model.score", "score+top_k+encode")[:: 1 if r % 2 == 0 else -1]:
            if name == "precompute":
                report = precompute(model, client, keys, ttl_s=3600, batch=batch, progress=False)
                if report.users != users or report.skipped:
                    raise RuntimeError(f"precompute wrote {report.users} of {users} users")
                rates[name].append(report.rate)
                model_share.append(report.model_seconds / report.seconds)
            else:
                rates[name].append(score_only() if name == "model.score" else score_encode())
    ratio = median(rates["precompute"]) / median(rates["model.score"])
    return {
        "users": users,
        "batch": batch,
        "rates": {name: [round(x, 1) for x in xs] for name, xs in rates.items()},
        "median": {name: round(median(xs), 1) for name, xs in rates.items()},
        "precompute_model_share": round(median(model_share), 3),
        "model_ms_per_user_by_batch": batch_curve(model, batches[0]),
        "ratio": round(ratio, 3),
        "goal": GOALS["precompute"],
        "met": ratio >= GOALS["precompute"],
    }


def batch_curve(
    model: LoadedModel, records: Sequence[Record], sizes: Sequence[int] = (1, 8, 64, 512)
) -> dict[str, float]:
    """Milliseconds of ``model.score`` per user by batch size (best of 3): the most any
    micro-batching can save. On a CPU it is little when per-user compute, not the fixed
    cost of a call, dominates."""
    curve = {}
    for size in sizes:
        if size > len(records):
            continue
        calls = max(3, 256 // size)
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            for i in range(calls):
                offset = i * size % (len(records) - size + 1)
                model.score(records[offset : offset + size])
            best = min(best, (time.perf_counter() - start) / (calls * size))
        curve[str(size)] = round(best * 1000, 4)
    return curve


@dataclass
class Target:
    """One configuration under load: its server and the paths it is sent (an iterator
    that persists over slices, so a cache-miss run never repeats a user)."""

    server: Server
    paths: Iterator[str]


def merge(total: LoadResult, part: LoadResult) -> None:
    """Add one slice's figures to a configuration's total."""
    total.requests += part.requests
    total.errors += part.errors
    total.seconds += part.seconds
    total.latencies += part.latencies
    total.first_error = total.first_error or part.first_error
    for status, count in part.statuses.items():
        total.statuses[status] = total.statuses.get(status, 0) + count
    for name, seconds in part.cpu_s.items():
        total.cpu_s[name] = total.cpu_s.get(name, 0.0) + seconds


def interleaved(
    targets: dict[str, Target], *, clients: int, seconds: float, slice_s: float, redis_pid: int
) -> dict[str, LoadResult]:
    """``seconds`` of load on each target, in slices of about ``slice_s`` alternating
    A B B A A B ..., so a burst of load from other tenants of this shared machine falls on
    both configurations instead of deciding the comparison."""
    totals = {name: LoadResult(clients) for name in targets}
    slices = max(1, round(seconds / slice_s))
    names = list(targets)
    for i in range(slices):
        for name in names if i % 2 == 0 else names[::-1]:
            target = targets[name]
            part = run_load(
                HOST,
                target.server.port,
                target.paths,
                clients=clients,
                seconds=seconds / slices,
                watch={"server": target.server.pid, "redis": redis_pid},
            )
            merge(totals[name], part)
    return totals


def bench_cached(
    launcher: Launcher,
    users: Sequence[str],
    prefix: str,
    version: str,
    redis_pid: int,
    args: argparse.Namespace,
    stack: contextlib.ExitStack,
) -> dict[str, Any]:
    """Cached GET: the service vs bare FastAPI + one Redis GET of the same keys."""
    servers = {
        "service": launcher.service(prefix, max_batch=64),
        "bare": launcher.bare(f"{prefix}profile:{version}:{{user_id}}"),
    }
    for server in servers.values():
        stack.callback(server.stop)
        server.start()
    service = servers["service"]
    paths = tag_paths(users)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in servers}
    for r in range(args.rounds):
        order = tuple(servers)[:: 1 if r % 2 == 0 else -1]
        targets = {}
        for name in order:
            server = servers[name]
            targets[name] = Target(server, cycle_from(paths, r * 7919 % len(paths)))
            run_load(
                HOST,
                server.port,
                targets[name].paths,
                clients=args.cached_clients,
                seconds=args.warmup,
            )
        before = service.metrics()
        results = interleaved(
            targets,
            clients=args.cached_clients,
            seconds=args.seconds,
            slice_s=args.slice,
            redis_pid=redis_pid,
        )
        after = service.metrics()
        for name, result in results.items():
            summary = result.summary()
            if name == "service":
                summary["cache_hits"] = delta(after, before, HIT)
                summary["cache_misses"] = delta(after, before, MISS)
            runs[name].append(summary)
            print(
                f"  cached round {r + 1} {name}: {summary['rps']:,.0f} req/s, "
                f"p50 {summary['p50_ms']:.2f} ms, errors {summary['errors']}",
                flush=True,
            )
    for server in servers.values():
        server.stop()
    out = _pair(runs, "service", "bare", GOALS["cached"])
    out["clients"] = args.cached_clients
    return out


HIT = 'tagprofile_profile_cache_total{result="hit"}'
MISS = 'tagprofile_profile_cache_total{result="miss"}'
MODEL = 'tagprofile_profiles_total{source="model"}'
BATCH_SUM, BATCH_COUNT = "tagprofile_model_batch_size_sum", "tagprofile_model_batch_size_count"
RUN_SUM = "tagprofile_model_run_seconds_sum"


def bench_miss(
    launcher: Launcher,
    client: redis.Redis,
    base: Users,
    redis_pid: int,
    args: argparse.Namespace,
    stack: contextlib.ExitStack,
) -> dict[str, Any]:
    """Cache misses: micro-batched vs batching off. Each round starts both servers on
    fresh key prefixes (nothing cached), loads the users under each, and interleaves."""
    configs = {"batched": 64, "unbatched": 1}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in configs}
    warm_users = replicate(base, args.miss_warmup_users, "w")
    measured = replicate(base, args.miss_users, "m")
    for r in range(args.rounds):
        order = tuple(configs)[:: 1 if r % 2 == 0 else -1]
        servers, targets, before = {}, {}, {}
        for name in order:
            prefix = f"bench:miss:{name}:{r}:"
            load_users(client, Keys(prefix), warm_users + measured)
            servers[name] = launcher.service(prefix, max_batch=configs[name], batch_wait_ms=2.0)
            stack.callback(servers[name].stop)
            servers[name].start()
        for name in order:
            run_load(
                HOST,
                servers[name].port,
                iter(tag_paths([u for u, _ in warm_users])),
                clients=args.miss_clients,
                seconds=args.warmup,
            )
            before[name] = servers[name].metrics()
            targets[name] = Target(servers[name], iter(tag_paths([u for u, _ in measured])))
        results = interleaved(
            targets,
            clients=args.miss_clients,
            seconds=args.seconds,
            slice_s=args.slice,
            redis_pid=redis_pid,
        )
        for name in order:
            after = servers[name].metrics()
            servers[name].stop()
            drop_prefix(client, f"bench:miss:{name}:{r}:")
            result = results[name]
            summary = result.summary()
            calls = delta(after, before[name], BATCH_COUNT)
            summary |= {
                "cache_misses": delta(after, before[name], MISS),
                "cache_hits": delta(after, before[name], HIT),
                "model_profiles": delta(after, before[name], MODEL),
                "model_calls": calls,
                "mean_batch": round(delta(after, before[name], BATCH_SUM) / calls, 2)
                if calls
                else 0,
                "model_seconds": round(delta(after, before[name], RUN_SUM), 3),
            }
            if summary["model_profiles"] != result.requests - result.errors:
                summary["warning"] = "not every request was scored by the model"
            runs[name].append(summary)
            print(
                f"  miss round {r + 1} {name}: {summary['rps']:,.0f} req/s, "
                f"p50 {summary['p50_ms']:.2f} ms, mean batch {summary['mean_batch']}, "
                f"errors {summary['errors']}",
                flush=True,
            )
    out = _pair(runs, "batched", "unbatched", GOALS["miss"])
    out |= {"clients": args.miss_clients, "users": args.miss_users}
    for name in configs:
        out["median"][name]["mean_batch"] = median([x["mean_batch"] for x in runs[name]])
    return out


def _pair(runs: dict[str, list[dict[str, Any]]], a: str, b: str, goal: float) -> dict[str, Any]:
    """Medians over rounds of each configuration and the ratio of the medians (a / b)."""
    med = {
        name: {
            key: median([run[key] for run in rs])
            for key in (
                "rps",
                "p50_ms",
                "p99_ms",
                "server_cpu_us_per_request",
                "client_cpu_us_per_request",
                "redis_cpu_us_per_request",
            )
            if all(key in run for run in rs)
        }
        | {"errors": sum(run["errors"] for run in rs)}
        for name, rs in runs.items()
    }
    ratio = med[a]["rps"] / med[b]["rps"] if med[b]["rps"] else float("nan")
    return {
        "runs": runs,
        "median": med,
        "ratio": round(ratio, 3),
        "goal": goal,
        "met": ratio >= goal,
    }


# -- report --------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }


def _rounds(runs: list[dict[str, Any]], key: str = "rps") -> str:
    return ", ".join(f"{run[key]:,.0f}" for run in runs)


def _goal(c: dict[str, Any]) -> str:
    return f"≥ {c['goal']}×: {'met' if c['met'] else 'NOT met'}"


def _load_row(
    c: dict[str, Any], name: str, label: str, measured: str, extra: str | None = None
) -> str:
    """One row of a load table; ``measured`` is the configuration whose ratio to the
    baseline row (1×) is the result, ``extra`` an optional column before ``errors``."""
    m = c["median"][name]
    ratio, goal = (f"**{c['ratio']:.2f}×**", _goal(c)) if name == measured else ("1×", "")
    cells = [
        label, str(c["clients"]), _rounds(c["runs"][name]), f"{m['rps']:,.0f}",
        f"{m['p50_ms']:.2f}", f"{m['p99_ms']:.2f}",
        f"{m.get('server_cpu_us_per_request', float('nan')):.0f}",
        *([extra] if extra is not None else []), str(m["errors"]), ratio, goal,
    ]  # fmt: skip
    return "| " + " | ".join(cells) + " |"


def markdown(results: dict[str, Any]) -> str:
    lines: list[str] = []
    header = (
        "| configuration | clients | req/s per round | median req/s | p50 ms | p99 ms "
        "| server CPU µs/req | errors | ratio | goal |"
    )
    rule = "|---|---:|---|---:|---:|---:|---:|---:|---:|---|"
    if "cached" in results:
        c = results["cached"]
        lines += ["Cached GET `/users/{id}/tags?k=5`", "", header, rule]
        labels = {
            "service": "service",
            "bare": "bare FastAPI + 1 Redis GET",
        }
        for name, label in labels.items():
            if name not in c["median"]:
                continue
            lines.append(_load_row(c, name, label, measured="service"))
        lines.append("")
    if "miss" in results:
        c = results["miss"]
        lines += [
            f"Cache misses ({c['users']:,} distinct users per round)",
            "",
            header.replace(" | errors", " | mean batch | errors"),
            rule.replace("|---:|---:|---|", "|---:|---:|---:|---|"),
        ]
        for name, label in (("batched", "micro-batched (64, 2 ms)"), ("unbatched", "max batch 1")):
            extra = f"{c['median'][name]['mean_batch']:.1f}"
            lines.append(_load_row(c, name, label, measured="batched", extra=extra))
        lines.append("")
    if "precompute" in results:
        c = results["precompute"]
        lines += [
            f"precompute ({c['users']:,} users, batches of {c['batch']})",
            "",
            "| path | users/s per round | median users/s | ratio | goal |",
            "|---|---|---:|---:|---|",
        ]
        for name in ("precompute", "model.score", "score+top_k+encode"):
            xs = ", ".join(f"{x:,.0f}" for x in c["rates"][name])
            if name == "precompute":
                ratio = f"**{c['ratio']:.2f}×**"
                goal = _goal(c)
            else:
                ratio = f"{c['median'][name] / c['median']['model.score']:.2f}×"
                goal = "baseline" if name == "model.score" else "diagnostic (no Redis)"
            lines.append(f"| {name} | {xs} | {c['median'][name]:,.0f} | {ratio} | {goal} |")
        curve = ", ".join(
            f"{size}: {ms:.3f}" for size, ms in c.get("model_ms_per_user_by_batch", {}).items()
        )
        lines += ["", f"model.score ms per user by batch size (best of 3): {curve}", ""]
    return "\n".join(lines)


# -- main ----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per run")
    parser.add_argument(
        "--slice", type=float, default=2.0, help="compared configurations alternate every ~N s"
    )
    parser.add_argument("--rounds", type=int, default=3, help="A/B rounds (median reported)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument(
        "--only",
        default="precompute,cached,miss",
        help="comma-separated subset of precompute,cached,miss",
    )
    parser.add_argument("--cached-clients", type=int, default=32)
    parser.add_argument("--miss-clients", type=int, default=64)
    parser.add_argument(
        "--miss-users",
        type=int,
        default=12_000,
        help="distinct users per cache-miss run (replicated from the bundle)",
    )
    parser.add_argument("--miss-warmup-users", type=int, default=2_000)
    parser.add_argument("--precompute-users", type=int, default=12_000)
    parser.add_argument("--precompute-batch", type=int, default=512)
    parser.add_argument("--omp-threads", type=int, default=1, help="OMP_NUM_THREADS of servers")
    parser.add_argument(
        "--intra-op-threads",
        type=int,
        default=0,
        help="onnxruntime threads, servers and precompute (0: its default)",
    )
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    args = parser.parse_args(argv)
    args.only = {name.strip() for name in args.only.split(",") if name.strip()}
    unknown = args.only - {"precompute", "cached", "miss"}
    if unknown:
        parser.error(f"--only: unknown benchmark(s) {sorted(unknown)}")
    if not 0 < args.seconds <= MAX_SECONDS or not 0 <= args.warmup <= MAX_SECONDS:
        parser.error(f"--seconds and --warmup must be in (0, {MAX_SECONDS:g}]")
    if not 1 <= args.rounds <= MAX_ROUNDS or args.slice <= 0:
        parser.error(f"--rounds must be in [1, {MAX_ROUNDS}] and --slice > 0")
    return args


def run(args: argparse.Namespace, stack: contextlib.ExitStack) -> dict[str, Any]:
    work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-service-")))
    server = EmbeddedRedis(work / "redis", host=HOST, persistence=False).start()
    stack.callback(server.stop)
    url = require_loopback_url(server.url)
    client = redis.Redis.from_url(url)
    stack.callback(client.close)
    redis_pid = int(client.info("server")["process_id"])
    launcher = Launcher(
        args.bundle, url, work, args.omp_threads, args.intra_op_threads, args.device
    )
    base = base_users(args.bundle)
    results: dict[str, Any] = {
        "machine": machine() | {"redis": client.info("server")["redis_version"]},
        "bundle": str(args.bundle),
        "bundle_users": len(base),
        "settings": {
            "seconds": args.seconds,
            "warmup": args.warmup,
            "rounds": args.rounds,
            "omp_threads": args.omp_threads,
            "intra_op_threads": args.intra_op_threads,
            "device": args.device,
        },
    }
    print(f"{args.bundle}: {len(base):,} users in the bundle; redis at {url}", flush=True)
    prefix = "bench:cached:"
    cached_users = replicate(base, args.precompute_users, "p")
    if args.only & {"precompute", "cached"}:
        # load + precompute: fills the cache of the cached-GET benchmark, and is benchmark 3.
        keys = Keys(prefix)
        load_users(client, keys, cached_users)
        model = load_model(
            args.bundle, device=args.device, max_k=50, intra_op_threads=args.intra_op_threads
        )
        version = model.version
        if "precompute" in args.only:
            results["precompute"] = bench_precompute(
                model, client, keys, args.rounds, args.precompute_batch
            )
            print(f"  precompute: {results['precompute']['median']}", flush=True)
        else:
            precompute(model, client, keys, ttl_s=3600, progress=False)
        del model
        if "cached" in args.only:
            results["cached"] = bench_cached(
                launcher, [u for u, _ in cached_users], prefix, version, redis_pid, args, stack
            )
        drop_prefix(client, prefix)
    if "miss" in args.only:
        results["miss"] = bench_miss(launcher, client, base, redis_pid, args, stack)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)

    def terminate(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)  # unwinds through the ExitStack: servers stop

    signal.signal(signal.SIGTERM, terminate)
    # Ctrl-C must unwind too, even where the shell started us with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        results = run(args, stack)
    results["wall_s"] = round(time.perf_counter() - started, 1)
    print()
    print(markdown(results))
    print(f"(machine: {results['machine']}; wall {results['wall_s']} s)")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
