"""``serve --workers 2`` vs one worker on the cached path (issue 15's bar), loopback only.

Both servers run side by side on one embedded Redis with every profile precomputed; the
load alternates between them in slices (A B B A ..., :func:`bench_service.interleaved`) so
the other tenants of this shared machine weigh on both. Reported per round and as medians:
req/s of ``GET /users/{id}/tags?k=5`` with ``--clients`` keep-alive connections, the ratio
2 workers / 1 worker, and the p50 of one lone connection on each (a worker that answers
through a socket without TCP_NODELAY waits ~40 ms for the peer's delayed ACK every time).

``--stock`` adds a third server, plain ``uvicorn --factory service.app:create_app --workers
2`` (uvicorn's own h11 protocol: no head deadline, no TCP_NODELAY), to show the slow path
this avoids.

On 2 cores the load generator and Redis share the cores with the workers, so the ratio is
bounded well below 2; what it shows is that a second worker adds throughput, not latency.

    .venv/bin/python benchmarks/bench_workers.py --bundle artifacts/bundles/synthetic-ctmvm \\
        --seconds 6 --rounds 3 --out artifacts/bench/workers.json
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_service import (
    HOST,
    Launcher,
    Server,
    Target,
    _pair,
    base_users,
    cycle_from,
    interleaved,
    load_users,
    machine,
    replicate,
    require_loopback_url,
    run_load,
    tag_paths,
)

from service.jobs import precompute
from service.model import load_model
from service.store import EmbeddedRedis, Keys, free_port


def wait_for_workers(server: Server, workers: int, timeout: float = 90) -> None:
    """Until ``workers`` distinct worker pids have answered ``/readyz``."""
    pids: set[int] = set()
    deadline = time.monotonic() + timeout
    while len(pids) < workers:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{server.name}: {len(pids)} of {workers} workers ready")
        status, body = server.get("/readyz")
        if status == 200:
            pids.add(orjson.loads(body)["details"]["worker_pid"])


def stock_uvicorn(launcher: Launcher, prefix: str) -> Server:
    """The service's app under uvicorn's command line, as an operator might first try."""
    port = free_port(HOST)
    env = launcher._env(
        {
            "TAGPROFILE_BUNDLE": str(launcher.bundle),
            "TAGPROFILE_REDIS_URL": launcher.redis_url,
            "TAGPROFILE_KEY_PREFIX": prefix,
            "TAGPROFILE_INTRA_OP_THREADS": "1",
            "TAGPROFILE_DEVICE": "cpu",
        }
    )
    argv = [sys.executable, "-m", "uvicorn", "--factory", "service.app:create_app"]
    argv += ["--host", HOST, "--port", str(port), "--workers", "2", "--no-access-log"]
    return Server("stock-uvicorn-w2", argv, env, port, launcher.logs)


def bench(args: argparse.Namespace, stack: contextlib.ExitStack) -> dict[str, Any]:
    work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-workers-")))
    server = EmbeddedRedis(work / "redis", host=HOST, persistence=False).start()
    stack.callback(server.stop)
    url = require_loopback_url(server.url)
    client = redis.Redis.from_url(url)
    redis_pid = int(client.info("server")["process_id"])
    prefix, keys = "bench:workers:", Keys("bench:workers:")
    users = replicate(base_users(args.bundle), args.users, "w")
    load_users(client, keys, users)
    model = load_model(args.bundle, device="cpu", max_k=50, intra_op_threads=1)
    precompute(model, client, keys, ttl_s=3600, progress=False)
    del model
    launcher = Launcher(args.bundle, url, work, omp_threads=1, intra_op_threads=1, device="cpu")
    servers = {
        f"{n} worker{'s' if n > 1 else ''}": launcher.service(prefix, max_batch=64, workers=n)
        for n in (2, 1)
    }
    counts = {name: int(name[0]) for name in servers}
    if args.stock:
        servers["stock uvicorn, 2 workers"] = stock_uvicorn(launcher, prefix)
        counts["stock uvicorn, 2 workers"] = 2
    for name, target in servers.items():
        stack.callback(target.stop)
        target.start()
        wait_for_workers(target, counts[name])
        print(f"  {name} ready", flush=True)
    paths = tag_paths([user for user, _ in users])
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in servers}
    lone: dict[str, list[float]] = {name: [] for name in servers}
    for r in range(args.rounds):
        targets = {
            name: Target(target, cycle_from(paths, (r * 7919 + i * 104729) % len(paths)))
            for i, (name, target) in enumerate(servers.items())
        }
        for target in targets.values():  # warm-up
            run_load(HOST, target.server.port, target.paths, clients=args.clients, seconds=1)
        results = interleaved(
            targets, clients=args.clients, seconds=args.seconds, slice_s=1.0, redis_pid=redis_pid
        )
        for name, result in results.items():
            runs[name].append(result.summary())
            single = run_load(HOST, servers[name].port, targets[name].paths, clients=1, seconds=2)
            lone[name].append(single.percentile_ms(50))
            print(
                f"  round {r + 1} {name}: {runs[name][-1]['rps']:,.0f} req/s, "
                f"one connection p50 {lone[name][-1]:.2f} ms",
                flush=True,
            )
    out = _pair(runs, "2 workers", "1 worker", goal=1.0)
    out["lone_p50_ms"] = {name: sorted(values)[len(values) // 2] for name, values in lone.items()}
    return {"machine": machine(), "clients": args.clients, "users": args.users, **out}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=6.0, help="measured seconds per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--users", type=int, default=12_000, help="distinct cached users")
    parser.add_argument("--stock", action="store_true", help="also plain uvicorn --workers 2")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with contextlib.ExitStack() as stack:
        results = bench(args, stack)
    names = list(results["median"])
    print("\n| server | req/s per round | median req/s | p50 ms | p99 ms | one-connection p50 ms |")
    print("|---|---|---|---|---|---|")
    for name in names:
        m = results["median"][name]
        rounds = ", ".join(f"{run['rps']:,.0f}" for run in results["runs"][name])
        print(
            f"| {name} | {rounds} | {m['rps']:,.0f} | {m['p50_ms']:.2f} | {m['p99_ms']:.2f} "
            f"| {results['lone_p50_ms'][name]:.2f} |"
        )
    print(f"\n2 workers / 1 worker: **{results['ratio']:.2f}×** ({results['machine']})")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
