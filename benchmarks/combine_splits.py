"""Average ``benchmark`` results over several user splits (one results.json per split).

On small public data sets the user split moves every model more than the gaps between
models, so a verdict should average over splits as well as training seeds. Run
``python -m training benchmark`` once per split (``prepare --seed S``), then:

    .venv/bin/python benchmarks/combine_splits.py OUT_SPLIT0 OUT_SPLIT1 OUT_SPLIT2

prints, per model, the mean ± std over all (split, seed) runs of P/R/HR/NDCG@10, the mean
of each split, and the checks of the models issue's bar on the pooled means.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from training.models import MODELS

METRICS = ("precision@10", "recall@10", "hr@10", "ndcg@10")


def load(directory: Path) -> dict:
    path = directory / "results.json"
    if not path.is_file():
        raise SystemExit(f"{path} not found: is {directory} a `training benchmark` output?")
    return json.loads(path.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("outputs", type=Path, nargs="+", help="benchmark --out directories")
    args = parser.parse_args()
    results = [load(d) for d in args.outputs]
    models = [m for m in MODELS if all(m in r["results"] for r in results)]
    runs: dict[str, dict[str, list[float]]] = {m: {k: [] for k in METRICS} for m in models}
    per_split: dict[str, list[float]] = {m: [] for m in models}
    for r in results:
        for m in models:
            metrics = r["results"][m]["metrics"]
            for k in METRICS:
                runs[m][k].extend(metrics[k]["values"])
            per_split[m].append(metrics["ndcg@10"]["mean"])
    dataset = results[0]["dataset"]["dataset"]
    n_runs = len(runs[models[0]]["ndcg@10"])
    print(f"{dataset}: {len(results)} splits, {n_runs} runs per model (split x seed)\n")
    head = " | ".join(k.replace("precision", "P").replace("recall", "R").upper() for k in METRICS)
    print(f"| model | {head} | NDCG@10 per split |")
    print("|---" * (len(METRICS) + 2) + "|")
    mean = {m: {k: statistics.fmean(v) for k, v in runs[m].items()} for m in models}
    for m in models:
        cells = [
            f"{mean[m][k]:.4f} ± {statistics.stdev(runs[m][k]) if n_runs > 1 else 0:.4f}"
            for k in METRICS
        ]
        splits = ", ".join(f"{v:.4f}" for v in per_split[m])
        print(f"| `{m}` | {' | '.join(cells)} | {splits} |")
    if {"ctmvm", "youtube", "mostpop", "userpop"} <= set(models):
        best_pop = max(("mostpop", "userpop"), key=lambda m: mean[m]["ndcg@10"])
        gain = statistics.fmean(
            (mean["ctmvm"][k] - mean["youtube"][k]) / mean["youtube"][k] for k in METRICS
        )
        print(f"\nctmvm vs youtube, mean relative gain over P/R/HR/NDCG@10: {gain:+.1%}")
        for k in ("ndcg@10", "precision@10"):
            print(
                f"{k}: ctmvm {mean['ctmvm'][k]:.4f}, youtube {mean['youtube'][k]:.4f}, "
                f"{best_pop} {mean[best_pop][k]:.4f}"
            )
    if {"sve", "youtube", "ctmvm"} <= set(models):
        print(
            f"ablation NDCG@10: youtube {mean['youtube']['ndcg@10']:.4f} -> sve "
            f"{mean['sve']['ndcg@10']:.4f} -> ctmvm {mean['ctmvm']['ndcg@10']:.4f}"
        )


if __name__ == "__main__":
    main()
