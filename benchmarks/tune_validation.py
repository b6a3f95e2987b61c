"""Grid search on validation users only: NDCG@10 and novel NDCG@10 of the selected epoch.

Each override is applied on top of the family config of the prepared data set; test users
are never scored, so the result can choose hyper-parameters honestly. Several ``--data``
directories (``prepare --seed S`` splits of one data set) are pooled: with a few dozen
validation users per split, one split alone cannot separate small differences.

    .venv/bin/python benchmarks/tune_validation.py --data artifacts/data/hetrec-movielens-2k \\
        --models sve --grid '{"tau": [0.1, 0.5], "credit": ["contains", "covers"]}' --seeds 0,1
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from pathlib import Path

from training.config import family_config_path, load_config, resolve
from training.data.processed import ProcessedDataset
from training.trainer import train_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", type=Path, nargs="+", required=True, help="prepared splits of one data set"
    )
    parser.add_argument("--models", required=True, help="comma-separated learned models")
    parser.add_argument("--grid", default="{}", help="JSON object: key -> list of values")
    parser.add_argument("--seeds", default="0,1", help="training seeds (0,1)")
    parser.add_argument("--config", type=Path, help="config file (default: the family's)")
    args = parser.parse_args()
    splits = [ProcessedDataset.load(path) for path in args.data]
    config = load_config(args.config or family_config_path(splits[0].meta["family"]))
    grid = json.loads(args.grid)
    seeds = [int(s) for s in args.seeds.split(",")]
    print("| model | overrides | valid NDCG@10 | valid novel NDCG@10 | best epochs | seconds |")
    print("|---|---|---:|---:|---|---:|")
    for name in args.models.split(","):
        for values in itertools.product(*grid.values()):
            overrides = dict(zip(grid, values, strict=True))
            hyper = {**resolve(config, name), **overrides}
            started, scores, novel, epochs = time.perf_counter(), [], [], []
            for data, seed in itertools.product(splits, seeds):
                result, _ = train_model(data, name, hyper, seed=seed, progress=False)
                chosen = next(h for h in result.history if h["epoch"] == result.best_epoch)
                scores.append(chosen["valid_ndcg@10"])
                novel.append(chosen["valid_novel_ndcg@10"])
                epochs.append(result.best_epoch)
            elapsed = time.perf_counter() - started
            print(
                f"| {name} | `{json.dumps(overrides)}` | {statistics.fmean(scores):.4f} "
                f"| {statistics.fmean(novel):.4f} | {epochs} | {elapsed:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
