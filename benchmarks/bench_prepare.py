"""Wall time and peak memory of ``python -m training prepare`` on the shared real data sets.

Each run is a fresh process (so its peak RSS is its own), timed end to end. As a baseline
measured in the same run, a second fresh process only *reads and splits* the same raw files
line by line (the I/O floor no loader can beat); the ratio says how much the whole protocol
(parsing, filtering, splits, negatives, Shapley values, saving) costs on top of that.

    .venv/bin/python benchmarks/bench_prepare.py [--shared ../shared/datasets] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATASETS = {
    "ml-latest-small": "movielens",
    "hetrec2011-movielens-2k": "hetrec-movielens",
}

_PREPARE = """
import resource, sys
from training.cli import main
code = main(sys.argv[1:])
print("MAXRSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
raise SystemExit(code)
"""

_READ_FLOOR = """
import resource, sys
from pathlib import Path
n = 0
for path in sorted(Path(sys.argv[1]).iterdir()):
    for line in path.read_bytes().splitlines():
        n += len(line.split(b"\\t" if path.suffix == ".dat" else b","))
print("MAXRSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
"""


def _timed(argv: list[str]) -> tuple[float, float]:
    """(seconds, peak RSS in MiB) of one fresh Python process."""
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{done.stderr}")
    rss = next(
        int(line.split()[1]) for line in done.stderr.splitlines() if line.startswith("MAXRSS_KB")
    )
    return elapsed, rss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared/datasets"))
    parser.add_argument("--repeat", type=int, default=3, help="runs per data set (median)")
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for folder, dataset in DATASETS.items():
            path = args.shared / folder
            if not path.is_dir():
                print(f"skip {folder}: {path} not found", file=sys.stderr)
                continue
            prepare = [
                sys.executable, "-c", _PREPARE, "prepare", "--dataset", dataset,
                "--path", str(path), "--out", str(Path(tmp) / folder),
            ]  # fmt: skip
            floor = [sys.executable, "-c", _READ_FLOOR, str(path)]
            runs = [_timed(prepare) for _ in range(args.repeat)]
            floors = [_timed(floor) for _ in range(args.repeat)]
            seconds = statistics.median(r[0] for r in runs)
            floor_seconds = statistics.median(r[0] for r in floors)
            rows.append(
                (folder, seconds, max(r[1] for r in runs), floor_seconds, seconds / floor_seconds)
            )

    print(
        f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    print(f"command: {' '.join(sys.argv)}  (median of {args.repeat} fresh processes)\n")
    print("| data set | prepare wall s | peak RSS MiB | read-floor s | prepare / floor |")
    print("|---|---:|---:|---:|---:|")
    for folder, seconds, rss, floor_seconds, ratio in rows:
        print(f"| {folder} | {seconds:.2f} | {rss:.0f} | {floor_seconds:.2f} | {ratio:.1f}x |")


if __name__ == "__main__":
    main()
