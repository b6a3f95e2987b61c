"""Time to first answer of ``make demo``: start it, poll the README's first curl until it
answers 200, report the seconds (and each stage's line from make's output), stop it.

Run twice to see both cases the issue names: a fresh artifacts folder (every stage runs)
and a second start that reuses the data, run and bundle (only load, precompute, serve).

    python benchmarks/bench_demo.py --artifacts /tmp/demo-artifacts [--port 8000]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path


def first_answer(url: str, proc: subprocess.Popen, limit_s: float) -> float:
    """Seconds until ``url`` answers 200 (polled every 0.2 s); raises if make exits first."""
    start = time.perf_counter()
    while time.perf_counter() - start < limit_s:
        if proc.poll() is not None:
            raise RuntimeError(f"make demo exited with {proc.returncode} before answering")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return time.perf_counter() - start
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"no answer from {url} within {limit_s:.0f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifacts", type=Path, required=True, help="ARTIFACTS for make")
    parser.add_argument("--port", type=int, default=8000, help="the demo serves on 8000")
    parser.add_argument("--limit", type=float, default=900.0, help="give up after (s)")
    args = parser.parse_args()
    url = f"http://127.0.0.1:{args.port}/users/u0/tags?k=5"
    log = args.artifacts.with_suffix(".log")
    args.artifacts.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        proc = subprocess.Popen(
            ["make", "demo", f"ARTIFACTS={args.artifacts}"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            seconds = first_answer(url, proc, args.limit)
        finally:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
    load = os.getloadavg()[0]
    print(f"first answer after {seconds:.1f} s (load average {load:.1f}); make output: {log}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
