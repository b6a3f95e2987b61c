"""Distributed (torchrun, DDP) against single-process training: validation NDCG@10 and wall time.

For each seed, interleaved, three fresh runs of ``python -m training train`` on the same
prepared data set:

- ``1 proc``: one process, torch's default intra-op threads (one per core);
- ``1 proc, 1 thread``: one process, ``OMP_NUM_THREADS=1``;
- ``torchrun 2``: ``python -m torch.distributed.run --nproc_per_node 2`` (gloo, CPU), one
  thread per process (torchrun's default ``OMP_NUM_THREADS=1``).

The quality figure is what the trainer selects on: validation NDCG@10 (and the selection
score) at the selected epoch, read from ``history.json``; test NDCG@10 comes from
``metrics.json``. Wall time is the whole command (imports, data, training, test report);
``train_seconds`` is the trainer's own (pre-training included). The ratio is 2-proc /
1-proc wall time (below 1: distributed is faster).

    PYTHONPATH=. .venv/bin/python benchmarks/bench_ddp.py \\
        --data artifacts/data/hetrec-movielens-2k --seeds 0 1 2 [--model ctmvm] [--epochs N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIGS = {
    "1 proc": ([], {}),
    "1 proc, 1 thread": ([], {"OMP_NUM_THREADS": "1"}),
    "torchrun 2": (["-m", "torch.distributed.run", "--nproc_per_node", "2"], {}),
}
"""Name -> (what comes between the interpreter and ``-m training``, extra environment)."""


def run_once(
    config: str, data: Path, model: str, seed: int, out: Path, extra: list[str]
) -> dict[str, float]:
    """One fresh training command; its wall time and what its run directory reports."""
    launcher, env = CONFIGS[config]
    argv = [sys.executable, *launcher, "-m", "training", "train", "--data", str(data),
            "--model", model, "--seed", str(seed), "--out", str(out),
            "--device", "cpu", *extra]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(
        argv, capture_output=True, text=True, env={**os.environ, **env}, check=False
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    history = json.loads((out / "history.json").read_text(encoding="utf-8"))
    best = next(h for h in history if h["epoch"] == metrics["best_epoch"])
    return {
        "wall_s": wall,
        "train_s": metrics["train_seconds"],
        "best_epoch": metrics["best_epoch"],
        "epochs_run": len(history) - 1,
        "valid_ndcg@10": best["valid_ndcg@10"],
        "valid_selection": best["valid_ndcg@10"] + best["valid_novel_ndcg@10"],
        "test_ndcg@10": metrics["ndcg@10"],
    }


def mean_std(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {spread:.4f}"


def table(results: dict[str, list[dict[str, float]]]) -> str:
    """Markdown: per configuration the mean ± std over seeds, and the wall-time ratios."""
    walls = {name: statistics.median(r["wall_s"] for r in runs) for name, runs in results.items()}
    bases = [name for name in ("1 proc", "1 proc, 1 thread") if name in walls]
    lines = [
        "| configuration | validation NDCG@10 | validation selection score | test NDCG@10 "
        "| runs | wall s (median) | train s (median) | "
        + "".join(f"wall / {base} | " for base in bases)
        + "epochs run (selected) |",
        "|---|---|---|---|---|---|---|" + "---|" * len(bases) + "---|",
    ]
    for name, runs in results.items():
        wall = walls[name]
        train = statistics.median(r["train_s"] for r in runs)
        epochs = ", ".join(f"{r['epochs_run']} ({r['best_epoch']})" for r in runs)
        lines.append(
            f"| {name} | {mean_std([r['valid_ndcg@10'] for r in runs])} "
            f"| {mean_std([r['valid_selection'] for r in runs])} "
            f"| {mean_std([r['test_ndcg@10'] for r in runs])} | {len(runs)} | {wall:.1f} "
            f"| {train:.1f} | "
            + "".join(f"{wall / walls[base]:.2f} | " for base in bases)
            + f"{epochs} |"
        )
    lines += ["", *noise_lines(results)]
    return "\n".join(lines)


def noise_lines(results: dict[str, list[dict[str, float]]]) -> list[str]:
    """Is the 2-process validation NDCG@10 within seed noise of one process? The difference
    of means with Welch's t-test against each single-process configuration (not pooled:
    the thread count changes the speed, not the result, so a seed run with both settings
    would count twice)."""
    from scipy.stats import ttest_ind

    if "torchrun 2" not in results:
        return []
    ddp = [r["valid_ndcg@10"] for r in results["torchrun 2"]]
    single = {name: [r["valid_ndcg@10"] for r in results[name]]
              for name in ("1 proc", "1 proc, 1 thread") if name in results}  # fmt: skip
    out = []
    for name, values in single.items():
        delta = statistics.mean(ddp) - statistics.mean(values)
        test = ttest_ind(ddp, values, equal_var=False) if min(len(ddp), len(values)) > 1 else None
        shown = "n/a" if test is None else f"{test.pvalue:.2f}"
        out.append(f"- validation NDCG@10, torchrun 2 − {name}: {delta:+.4f} "
                   f"(Welch t-test p = {shown}; {len(ddp)} vs {len(values)} runs)")  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="a prepared data set")
    parser.add_argument("--model", default="ctmvm")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--epochs", type=int, help="maximum epochs (default: the config's)")
    parser.add_argument("--json", type=Path, help="also write every run's figures here")
    parser.add_argument(
        "--report", type=Path, nargs="+",
        help="print the table of earlier --json files (runs pooled per configuration), run nothing",
    )  # fmt: skip
    args = parser.parse_args()
    if args.report:
        pooled: dict[str, list[dict[str, float]]] = {}
        for path in args.report:
            for name, runs in json.loads(path.read_text(encoding="utf-8")).items():
                pooled.setdefault(name, []).extend(runs)
        print(table({name: pooled[name] for name in CONFIGS if pooled.get(name)}))
        return
    if args.data is None:
        parser.error("--data is required (or --report)")
    print(f"{platform.platform()}, {os.cpu_count()} cores, python {platform.python_version()}")
    results: dict[str, list[dict[str, float]]] = {name: [] for name in args.configs}
    with tempfile.TemporaryDirectory(prefix="bench-ddp-") as tmp:
        for seed in args.seeds:  # interleaved: the machine's load drifts alike for each
            for name in args.configs:
                out = Path(tmp) / f"{name.replace(' ', '_').replace(',', '')}-{seed}"
                extra = [] if args.epochs is None else ["--epochs", str(args.epochs)]
                run = run_once(name, args.data, args.model, seed, out, extra)
                results[name].append(run)
                shown = {k: round(v, 4) for k, v in run.items()}
                print(f"seed {seed} {name}: {json.dumps(shown)}", flush=True)
                if args.json:  # after every run: an interrupted benchmark keeps what it did
                    args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(table(results))


if __name__ == "__main__":
    main()
