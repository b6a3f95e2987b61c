"""Where ``prepare`` spends memory on a large synthetic world, step by step.

Makes the calls ``python -m training prepare --dataset synthetic`` makes
(``generate_synthetic``, ``prepare_dataset``, ``ProcessedDataset.save``) in one process and
prints RSS, peak RSS and CPU seconds as each protocol step starts and after saving:

    .venv/bin/python benchmarks/probe_prepare_memory.py --users 500000 --items 50000 \\
        --tags 20000 --out /tmp/probe-500k
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

from training.data.synthetic import generate_synthetic
from training.protocol import ProtocolConfig, prepare_dataset


def _rss_mib() -> int:
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) // 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, required=True)
    parser.add_argument("--items", type=int, required=True)
    parser.add_argument("--tags", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    started = time.perf_counter()

    def step(name: str) -> None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        print(f"{name:24s} rss {_rss_mib():6d} MiB  peak {usage.ru_maxrss // 1024:6d} MiB  "
              f"wall {time.perf_counter() - started:7.1f} s  "
              f"cpu {usage.ru_utime + usage.ru_stime:7.1f} s", flush=True)  # fmt: skip

    step("start")
    raw = generate_synthetic(users=args.users, items=args.items, tags=args.tags)
    step("generated")
    config = ProtocolConfig(min_tag_count=1, tau=0.5)  # prepare's synthetic defaults
    data, stats = prepare_dataset(raw, config, family="synthetic", on_step=step)
    step("protocol and stats done")
    data.save(args.out, stats)
    step("saved")


if __name__ == "__main__":
    main()
