"""One table across the data sets of ``make bench-models``: NDCG@10, novel and repeat NDCG@10
per model (means over splits × seeds), then every check of the bar per data set.

    .venv/bin/python benchmarks/model_quality_summary.py artifacts/bench/*/results.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from training.report import checks

KEYS = ("ndcg@10", "novel_ndcg@10", "repeat_ndcg@10", "train_seconds")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, nargs="+", help="results.json of benchmarks")
    args = parser.parse_args()
    loaded = [json.loads(path.read_text(encoding="utf-8")) for path in args.results]
    print("| data set | model | NDCG@10 | novel NDCG@10 | repeat NDCG@10 | train s |")
    print("|---|---|---:|---:|---:|---:|")
    for results in loaded:
        name = results["dataset"]["dataset"]
        for model in results["models"]:
            metrics = results["results"].get(model, {}).get("metrics", {})
            cells = [
                f"{metrics[k]['mean']:.{1 if k == 'train_seconds' else 4}f}"
                if k in metrics else "n/a"
                for k in KEYS
            ]  # fmt: skip
            print(f"| {name} | `{model}` | " + " | ".join(cells) + " |")
    print()
    print("| data set | check | met | evidence |")
    print("|---|---|---|---|")
    for results in loaded:
        for check, met, evidence in checks(results):
            print(f"| {results['dataset']['dataset']} | {check} | {met} | {evidence} |")


if __name__ == "__main__":
    main()
