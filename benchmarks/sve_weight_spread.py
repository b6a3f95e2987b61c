"""How far SVE weights move from 1 with each credit scale: the share of positive sample rows
whose weight is outside [0.5, 1.5] at τ = 0.1, fraction credit vs the paper's count credit.

    .venv/bin/python benchmarks/sve_weight_spread.py artifacts/data/hetrec-movielens-2k-split0 ...
"""

from __future__ import annotations

import argparse
from pathlib import Path

from training.config import family_config_path, load_config, resolve
from training.data.processed import ProcessedDataset
from training.samples import sample_weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, nargs="+", help="directories written by `prepare`")
    args = parser.parse_args()
    print("| data set | fraction credit | count credit |")
    print("|---|---:|---:|")
    for path in args.data:
        data = ProcessedDataset.load(path)
        config = resolve(load_config(family_config_path(data.meta["family"])), "sve")
        rows = data.single_tag_samples("train")
        shares = []
        for scale in ("fraction", "count"):
            weights = sample_weights(data, rows, {**config, "tau": 0.1, "credit_scale": scale})
            positive = weights[rows.label == 1]
            shares.append(float(((positive < 0.5) | (positive > 1.5)).mean()))
        print(f"| {data.meta['dataset']} | {shares[0]:.2f} | {shares[1]:.2f} |")


if __name__ == "__main__":
    main()
