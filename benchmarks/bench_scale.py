"""Unit costs of a scaled synthetic world, stage by stage (issue 15, item 5).

One large synthetic world goes through every offline stage as the user would run it, each
stage a fresh process: ``training prepare``, ``training train --model ctmvm`` (one epoch,
bounded by ``--max-batches`` when a full epoch would take too long here), ``training
export``, ``service load`` and ``service precompute`` (the in-process engine) against a
redis-server this script starts (no persistence) and stops. For every stage it records wall
time, a throughput in the stage's own unit, and the peak RSS of the stage's process
(``os.wait4``'s ``ru_maxrss``); a stage whose RSS passes ``--rss-limit-gb`` is stopped, so
the script never takes more than its share of a shared machine. Redis memory per feature
record and per profile is ``INFO memory`` ``used_memory`` after minus before, divided by the
keys the stage added.

    .venv/bin/python benchmarks/bench_scale.py --users 1000000 --items 100000 --tags 20000 \\
        --work /tmp/scale --max-batches 2000 --out artifacts/bench/scale.json

``--reuse`` skips a stage whose output is already in ``--work`` (the figures of a skipped
stage are carried over from the previous JSON, if any). ``docs/SCALING.md`` turns the
figures into a plan.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis

from service.store.embedded import EmbeddedRedis

STAGES = ("prepare", "train", "export", "load", "precompute")
_POLL_S = 0.5


def _rss_kb(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def run_stage(argv: list[str], log: Path, limit_kb: int) -> dict[str, Any]:
    """Run one stage as a child process: wall and CPU seconds, peak RSS (MiB), exit code.

    The child is polled every half second and stopped (SIGTERM) if its RSS passes
    ``limit_kb``; ``ru_maxrss`` from ``wait4`` is the exact peak of that child alone.
    """
    print(f"$ {' '.join(argv)}", flush=True)
    started = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    stopped = False
    while True:  # wait4, not poll(): it reaps the child and returns its own rusage
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            break
        if not stopped and _rss_kb(proc.pid) > limit_kb:
            proc.send_signal(signal.SIGTERM)
            stopped = True
        time.sleep(_POLL_S)
    seconds = time.perf_counter() - started
    peak_kb = usage.ru_maxrss
    result = {
        "argv": argv,
        "seconds": round(seconds, 2),
        "peak_rss_mib": round(peak_kb / 1024),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
        "returncode": proc.returncode,
        "stopped_over_rss_limit": stopped,
    }
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:]
        raise SystemExit(f"stage failed ({result}); log tail:\n{tail}")
    return result


def _used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def _count_lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(1 for _ in f)


def _subset(bundle: Path, args: argparse.Namespace) -> Path:
    """A bundle with the first ``--precompute-users`` users: the other files are links."""
    subset = args.work.resolve() / f"bundle-first-{args.precompute_users}"
    subset.mkdir(exist_ok=True)
    for path in bundle.iterdir():
        target = subset / path.name
        if path.name == "users.jsonl":
            with path.open("rb") as src, target.open("wb") as dst:
                for _, line in zip(range(args.precompute_users), src, strict=False):
                    dst.write(line)
        elif path.name != "manifest.json" and not target.exists():
            target.symlink_to(path.resolve())
    # the manifest pins every file's size and hash: record the shortened users.jsonl
    manifest = json.loads((bundle / "manifest.json").read_text())
    users = (subset / "users.jsonl").read_bytes()
    manifest["files"]["users.jsonl"] = {
        "sha256": hashlib.sha256(users).hexdigest(),
        "bytes": len(users),
    }
    (subset / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return subset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--tags", type=int, default=20_000)
    parser.add_argument("--work", type=Path, required=True, help="stage outputs (large)")
    parser.add_argument("--out", type=Path, required=True, help="JSON with every figure")
    parser.add_argument("--stages", default=",".join(STAGES), help="comma-separated subset")
    parser.add_argument(
        "--max-batches", type=int, default=2000, help="train batches measured (0: full epoch)"
    )
    parser.add_argument(
        "--eval-fraction", type=float, default=0.2,
        help="prepare's --test-fraction and --valid-fraction: evaluation scores every tag "
        "for every valid and test user, which dominates a bounded epoch at 20k tags",
    )  # fmt: skip
    parser.add_argument(
        "--precompute-users", type=int, default=0,
        help="precompute only the first N users of the bundle (0: all); load is measured on "
        "all of them first, then Redis is emptied and the N users are loaded again",
    )  # fmt: skip
    parser.add_argument("--rss-limit-gb", type=float, default=10.0)
    parser.add_argument("--reuse", action="store_true", help="skip stages already done")
    args = parser.parse_args()
    stages = [s for s in args.stages.split(",") if s]
    unknown = set(stages) - set(STAGES)
    if unknown:
        parser.error(f"unknown stage(s) {sorted(unknown)}; choose from {','.join(STAGES)}")

    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    data, run, bundle = work / "data", work / "run", work / "bundle"
    py = [sys.executable, "-m"]
    limit_kb = int(args.rss_limit_gb * 1024 * 1024)
    previous = json.loads(args.out.read_text()) if args.out.is_file() else {}
    report: dict[str, Any] = {
        "world": {"users": args.users, "items": args.items, "tags": args.tags},
        "machine": {
            "nproc": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "note": "shared with other jobs; read throughputs as this-machine figures",
        },
        "stages": dict(previous.get("stages", {})),
    }
    env_note = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "unset")}
    report["machine"]["env"] = env_note

    def done(stage: str, marker: Path) -> bool:
        return args.reuse and marker.exists()

    def save() -> None:  # after every stage, so a failed stage keeps the others' figures
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")

    if "prepare" in stages and not done("prepare", data / "stats.json"):
        r = run_stage(
            [*py, "training", "prepare", "--dataset", "synthetic", "--users", str(args.users),
             "--items", str(args.items), "--tags", str(args.tags), "--out", str(data),
             "--test-fraction", str(args.eval_fraction),
             "--valid-fraction", str(args.eval_fraction)],
            work / "prepare.log", limit_kb,
        )  # fmt: skip
        stats = json.loads((data / "stats.json").read_text())
        r.update(
            users=stats["users"], tags_kept=stats["tags"], interactions=stats["interactions"],
            train_samples=stats["train_samples"], users_per_s=round(stats["users"] / r["seconds"]),
            interactions_per_s=round(stats["interactions"] / r["seconds"]),
            disk_mib=round(sum(f.stat().st_size for f in data.iterdir()) / 2**20),
        )  # fmt: skip
        report["stages"]["prepare"] = r
        save()

    if "train" in stages and not done("train", run / "checkpoint.pt"):
        bounded = ["--max-batches", str(args.max_batches)] if args.max_batches else []
        r = run_stage(
            [*py, "training", "train", "--data", str(data), "--model", "ctmvm", "--epochs", "1",
             *bounded, "--device", "cpu", "--out", str(run)],
            work / "train.log", limit_kb,
        )  # fmt: skip
        epoch = json.loads((run / "history.json").read_text())[1]
        stats = json.loads((data / "stats.json").read_text())
        rate = epoch["epoch_samples"] / epoch["epoch_seconds"]
        metrics = json.loads((run / "metrics.json").read_text())
        r.update(
            batches_measured=args.max_batches or None, epoch_samples=epoch["epoch_samples"],
            epoch_seconds=epoch["epoch_seconds"], samples_per_s=round(rate, 1),
            train_samples=stats["train_samples"],
            full_epoch_hours_extrapolated=round(stats["train_samples"] / rate / 3600, 2),
            train_seconds_incl_pretraining=metrics["train_seconds"],
            test_ndcg_at_10=round(metrics["ndcg@10"], 4),
        )  # fmt: skip
        report["stages"]["train"] = r
        save()

    if "export" in stages and not done("export", bundle / "manifest.json"):
        r = run_stage(
            [*py, "training", "export", "--run", str(run), "--out", str(bundle)],
            work / "export.log", limit_kb,
        )  # fmt: skip
        users = _count_lines(bundle / "users.jsonl")
        r.update(
            users=users, users_per_s=round(users / r["seconds"]),
            users_jsonl_bytes_per_user=round((bundle / "users.jsonl").stat().st_size / users),
            model_onnx_mib=round((bundle / "model.onnx").stat().st_size / 2**20, 1),
        )  # fmt: skip
        report["stages"]["export"] = r
        save()

    if {"load", "precompute"} & set(stages):
        with EmbeddedRedis(work / "redis", persistence=False) as server:
            client = redis.Redis.from_url(server.url)
            url = ["--redis-url", server.url, "--bundle", str(bundle)]
            before, keys_before = _used_memory(client), client.dbsize()
            r = run_stage([*py, "service", "load", *url], work / "load.log", limit_kb)
            after, keys_after = _used_memory(client), client.dbsize()
            users = _count_lines(bundle / "users.jsonl")
            r.update(
                users=users, users_per_s=round(users / r["seconds"]),
                keys_added=keys_after - keys_before, redis_used_memory_added_mib=round(
                    (after - before) / 2**20, 1),
                redis_bytes_per_feature_record=round((after - before) / users),
                redis_server_pid=server.pid,
            )  # fmt: skip
            report["stages"]["load"] = r
            save()
            if "precompute" in stages:
                if args.precompute_users:
                    url = ["--redis-url", server.url, "--bundle", str(_subset(bundle, args))]
                    client.flushall()
                    run_stage([*py, "service", "load", *url], work / "load-subset.log", limit_kb)
                before, keys_before = _used_memory(client), client.dbsize()
                r = run_stage(
                    [*py, "service", "precompute", *url], work / "precompute.log", limit_kb
                )
                after, keys_after = _used_memory(client), client.dbsize()
                profiles = keys_after - keys_before
                r.update(
                    profiles=profiles, users_per_s=round(profiles / r["seconds"]),
                    redis_used_memory_added_mib=round((after - before) / 2**20, 1),
                    redis_bytes_per_profile=round((after - before) / max(profiles, 1)),
                    redis_used_memory_total_mib=round(after / 2**20, 1),
                    redis_rss_mib=round(int(client.info("memory")["used_memory_rss"]) / 2**20),
                )  # fmt: skip
                report["stages"]["precompute"] = r

    save()
    print_table(report)
    print(f"wrote {args.out}")


def print_table(report: dict[str, Any]) -> None:
    units = {"prepare": "users_per_s", "train": "samples_per_s", "export": "users_per_s",
             "load": "users_per_s", "precompute": "users_per_s"}  # fmt: skip
    print("| stage | wall s | throughput | peak RSS MiB | Redis bytes/record |")
    print("|---|---:|---:|---:|---:|")
    for stage in STAGES:
        r = report["stages"].get(stage)
        if r is None:
            continue
        unit = units[stage]
        per = r.get("redis_bytes_per_feature_record", r.get("redis_bytes_per_profile", ""))
        print(f"| {stage} | {r['seconds']:,.1f} | {r[unit]:,} {unit.replace('_per_s', '/s')} "
              f"| {r['peak_rss_mib']:,} | {per} |")  # fmt: skip


if __name__ == "__main__":
    main()
