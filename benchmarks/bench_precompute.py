"""Every profile of a bundle's users, in process (``precompute``, the baseline) and on a local
Ray (``precompute --engine ray``), into one Redis: users/s, peak memory, Redis memory per
profile.

One real redis-server (no persistence) is started; the bundle's users are loaded into its
feature store once (``load``, from the Parquet shards: the local engine reads Redis, the Ray
engine reads the shards). Then, ``--rounds`` times, each engine precomputes every profile in
a fresh process, the order alternating per round (L R, R L, ...), with the profiles and the
Ray engine's finished-shard set deleted before each run (the features stay). Each run is
timed under ``/usr/bin/time -v`` (peak RSS of the largest process it waited for) while the
summed RSS of its whole process tree (Ray's GCS, raylet and workers included; shared pages
counted once per process) is sampled every 0.2 s. After each Ray run every user must have a
profile, byte-identical to the local engine's for a sample of users.

    .venv/bin/python benchmarks/bench_precompute.py --bundle BUNDLE [--rounds 2] [--actors 2]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import redis

from service.model import load_bundle
from service.store import EmbeddedRedis, Keys

KEYS = Keys()
SUMMARY = re.compile(r"precomputed (\d+) profiles .* in ([\d.]+) s \(([\d,]+) users/s")
STEADY = re.compile(r"first batch after ([\d.]+) s, then ([\d,]+) users/s")
SAMPLE = 2000


def tree_rss(root: psutil.Process) -> int:
    """Summed RSS (bytes) of ``root`` and every descendant alive now."""
    total = 0
    for process in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += process.memory_info().rss
    return total


def timed(argv: list[str], env: dict[str, str]) -> dict[str, float | str]:
    """Run ``argv`` under /usr/bin/time -v; its summary, wall time and peak memories."""
    started = time.perf_counter()
    process = subprocess.Popen(
        ["/usr/bin/time", "-v", *argv], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    peak, done = 0, threading.Event()

    def sample() -> None:
        nonlocal peak
        root = psutil.Process(process.pid)
        while not done.wait(0.2):
            try:
                peak = max(peak, tree_rss(root))
            except psutil.Error:
                return

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = process.communicate()
    done.set()
    sampler.join()
    wall = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({process.returncode}):\n{out}\n{err[-3000:]}")
    max_rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", err).group(1))
    figures: dict[str, float | str] = {}
    if summary := SUMMARY.search(out):  # precompute's last line
        figures = {
            "profiles": int(summary.group(1)),
            "seconds": float(summary.group(2)),
            "users_per_s": float(summary.group(3).replace(",", "")),
        }
    if steady := STEADY.search(out):  # the Ray engine's start-up and steady rate
        figures["first_batch_s"] = float(steady.group(1))
        figures["steady_users_per_s"] = float(steady.group(2).replace(",", ""))
    return {
        **figures,
        "wall_s": wall,
        "time_v_max_rss_mib": max_rss_kb / 1024,
        "tree_peak_rss_mib": peak / 2**20,
        "summary": out.strip().splitlines()[-1],
    }


def forget_profiles(client: redis.Redis, version: str) -> None:
    """Delete every profile of ``version`` and the Ray engine's finished-shard set."""
    client.delete(KEYS.precompute_done(version))
    batch = []
    for key in client.scan_iter(match=f"{KEYS.prefix}profile:{version}:*", count=10_000):
        batch.append(key)
        if len(batch) == 10_000:
            client.unlink(*batch)
            batch.clear()
    if batch:
        client.unlink(*batch)


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, required=True, help="bundle with Parquet shards")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--actors", type=int, default=2, help="Ray scoring actors (2)")
    parser.add_argument("--batch", type=int, default=512, help="users per model call (512)")
    parser.add_argument("--out", type=Path, help="also write the figures here as JSON")
    args = parser.parse_args()
    bundle = load_bundle(args.bundle)
    if not bundle.user_shards:
        raise SystemExit(f"{args.bundle} has no Parquet shards: export --users-format parquet")
    user_ids = [
        u
        for p in bundle.user_shards
        for u in pq.read_table(p, columns=["user_id"])["user_id"].to_pylist()
    ]
    users = len(user_ids)
    sample_users = random.Random(0).sample(user_ids, min(SAMPLE, users))
    version = bundle.model_version
    python = [sys.executable, "-m", "service"]
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(tmp, persistence=False) as server:
        client = redis.Redis.from_url(server.url)
        env = {**os.environ, "TAGPROFILE_REDIS_URL": server.url}
        common = ["--bundle", str(args.bundle), "--batch", str(args.batch)]
        empty = used_memory(client)
        load = timed([*python, "load", "--bundle", str(args.bundle)], env)
        loaded = used_memory(client)
        n_features = sum(1 for _ in client.scan_iter(match=KEYS.features_pattern, count=10_000))
        assert n_features == users, f"{n_features} feature hashes for {users} users"
        engines = {
            "local": [*python, "precompute", *common],
            "ray": [*python, "precompute", *common, "--engine", "ray",
                    "--actors", str(args.actors)],
        }  # fmt: skip
        runs: dict[str, list[dict]] = {"local": [], "ray": []}
        reference: dict[bytes, bytes] = {}
        per_profile: list[float] = []
        for round_ in range(args.rounds):
            order = ["local", "ray"] if round_ % 2 == 0 else ["ray", "local"]
            for engine in order:
                forget_profiles(client, version)
                before = used_memory(client)
                result = timed(engines[engine], env)
                after = used_memory(client)
                profiles = [f"{KEYS.prefix}profile:{version}:{u}".encode() for u in sample_users]
                if engine == "local" and not reference:
                    reference = dict(zip(profiles, client.mget(profiles), strict=True))
                n_profiles = sum(
                    1 for _ in client.scan_iter(match=f"{KEYS.prefix}profile:*", count=10_000)
                )
                result["profiles_in_redis"] = n_profiles
                if engine == "ray":
                    assert n_profiles == users, f"ray run left {users - n_profiles} users unscored"
                if reference:
                    same = dict(zip(profiles, client.mget(profiles), strict=True)) == reference
                    result["sample_identical_to_local"] = same
                per_profile.append((after - before) / max(n_profiles, 1))
                print(f"round {round_ + 1} {engine}: {json.dumps(result)}", flush=True)
                runs[engine].append(result)
        keys_total = client.dbsize()
    median = {
        engine: {
            "users_per_s": statistics.median(r["users_per_s"] for r in results),
            "wall_s": statistics.median(r["wall_s"] for r in results),
            "time_v_max_rss_mib": max(r["time_v_max_rss_mib"] for r in results),
            "tree_peak_rss_mib": max(r["tree_peak_rss_mib"] for r in results),
        }
        for engine, results in runs.items()
    }
    median["ray"]["first_batch_s"] = statistics.median(r["first_batch_s"] for r in runs["ray"])
    median["ray"]["steady_users_per_s"] = statistics.median(
        r["steady_users_per_s"] for r in runs["ray"]
    )
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "bundle": str(args.bundle),
        "users": users,
        "tags": bundle.n_tags,
        "shards": len(bundle.user_shards),
        "actors": args.actors,
        "batch": args.batch,
        "load": load,
        "redis_bytes_per_user_features": (loaded - empty) / users,
        "redis_bytes_per_profile": statistics.median(per_profile),
        "redis_keys_at_end": keys_total,
        "runs": runs,
        "median": median,
        "ray_over_local_users_per_s": median["ray"]["users_per_s"] / median["local"]["users_per_s"],
        "ray_over_local_wall": median["local"]["wall_s"] / median["ray"]["wall_s"],
    }
    print(json.dumps({k: v for k, v in report.items() if k != "runs"}, indent=2))
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
