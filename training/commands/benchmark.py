"""``benchmark``: every (model, seed) on one prepared data set -> results.json/.md/.png.

Each run goes through the same ``run_training`` as ``train`` (same features, budget and
evaluation) into ``OUT/runs/<model>/seed<k>/``; the report is aggregated over seeds by
``training.report``. ``results.json`` is rewritten after every finished run, so an
interrupted benchmark still leaves the numbers it has (marked incomplete).
"""

from __future__ import annotations

import argparse
import json
import shlex
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tqdm import tqdm

from training.commands.train import add_common, model_config
from training.data.processed import ProcessedDataset
from training.models import MODELS
from training.pipeline import run_training
from training.report import aggregate, plot_results, render_markdown
from training.runs import write_json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "benchmark",
        help="train and evaluate several models over several seeds, report mean ± std",
        description="Train and evaluate every (model, seed) on a prepared data set into "
        "OUT/runs/<model>/seed<k>/, then write OUT/results.json (per-metric mean, sample std "
        "and per-seed values), OUT/results.md (tables: metrics, improvement of ctmvm, "
        "ablation youtube -> sve -> sve_pkm -> ctmvm) and OUT/results.png (@10 bar chart).",
    )
    add_common(p)
    p.add_argument(
        "--models", required=True,
        help=f"comma-separated model names, from: {','.join(MODELS)}",
    )  # fmt: skip
    p.add_argument("--seeds", required=True, help="comma-separated integer seeds, e.g. 0,1,2")
    p.add_argument("--out", type=Path, required=True, help="output directory (created)")


def _split(text: str, what: str) -> list[str]:
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or any(not p for p in parts):
        raise ValueError(f"--{what} must be a comma-separated list without empty entries: "
                         f"{text!r}")  # fmt: skip
    duplicates = sorted({p for p in parts if parts.count(p) > 1})
    if duplicates:
        raise ValueError(f"--{what}: duplicate entries {', '.join(duplicates)}")
    return parts


def parse_models(text: str) -> list[str]:
    """Model names in the given order; unknown or repeated names are an error up front,
    before hours of training go to a typo."""
    names = _split(text, "models")
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise ValueError(
            f"--models: unknown model(s) {', '.join(map(repr, unknown))}; "
            f"valid models: {', '.join(MODELS)}"
        )
    return names


def parse_seeds(text: str) -> list[int]:
    """Non-negative integer seeds (numpy's generators refuse negative ones)."""
    seeds = []
    for part in _split(text, "seeds"):
        try:
            seed = int(part)
        except ValueError:
            raise ValueError(f"--seeds: seeds must be integers, got {part!r}") from None
        if seed < 0:
            raise ValueError(f"--seeds: seeds must be non-negative integers, got {seed}")
        seeds.append(seed)
    if len(set(seeds)) != len(seeds):  # "1" and "01" pass the text check
        raise ValueError(f"--seeds: duplicate seeds in {text!r}")
    return seeds


def command_line(args: argparse.Namespace, models: list[str], seeds: list[int]) -> str:
    """The canonical command that reproduces this benchmark (whatever the caller typed)."""
    parts = ["python", "-m", "training", "benchmark", "--data", str(args.data)]
    parts += ["--models", ",".join(models), "--seeds", ",".join(map(str, seeds))]
    parts += ["--out", str(args.out)]
    if args.config is not None:
        parts += ["--config", str(args.config)]
    if args.epochs is not None:
        parts += ["--epochs", str(args.epochs)]
    parts += ["--device", args.device]
    return shlex.join(parts)


def _summary(per_model: dict[str, dict[int, dict[str, Any]]], out: Path) -> dict[str, Any]:
    summary = {}
    for model, per_seed in per_model.items():
        if per_seed:
            summary[model] = aggregate(per_seed)
            summary[model]["runs"] = {
                str(s): str(out / "runs" / model / f"seed{s}") for s in sorted(per_seed)
            }
    return summary


def _headline(metrics: dict[str, Any]) -> str:
    keys = [k for k in ("ndcg@10", "precision@10", "hr@10") if k in metrics]
    shown = " ".join(f"{k}={metrics[k]:.4f}" for k in keys)
    return f"{shown} ({metrics.get('train_seconds', 0.0):.1f}s)"


def write_report(results: dict[str, Any], out: Path) -> None:
    """results.json, results.md and results.png from the aggregated results."""
    write_json(out / "results.json", results)
    (out / "results.md").write_text(render_markdown(results), encoding="utf-8")
    plot_results(results, out / "results.png")


def run(args: argparse.Namespace) -> int:
    models = parse_models(args.models)
    seeds = parse_seeds(args.seeds)
    data = ProcessedDataset.load(args.data)
    # resolve every config first: a missing hyper-parameter fails before any training
    configs = {m: model_config(args, data, m) for m in models}
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "command": command_line(args, models, seeds),
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "data": str(args.data),
        "dataset": data.meta,
        "seeds": seeds,
        "models": models,
        "device": args.device,
        "epochs": args.epochs,
        "complete": False,
        "hyperparameters": configs,
        "results": {},
    }
    per_model: dict[str, dict[int, dict[str, Any]]] = {m: {} for m in models}
    plan = [(m, s) for m in models for s in seeds]
    try:
        with tqdm(total=len(plan), desc="benchmark", unit="run", disable=None) as bar:
            for model, seed in plan:
                bar.set_postfix_str(f"{model} seed {seed}")
                run_dir = out / "runs" / model / f"seed{seed}"
                metrics = run_training(
                    data, args.data, model, configs[model],
                    seed=seed, device=args.device, out=run_dir, progress=False,
                )  # fmt: skip
                per_model[model][seed] = metrics
                bar.write(f"{model:8s} seed {seed}: {_headline(metrics)} -> {run_dir}")
                results["results"] = _summary(per_model, out)
                write_json(out / "results.json", results)
                bar.update(1)
        results["complete"] = True
    finally:
        # an interrupted or failed benchmark still reports the runs it finished
        if results["results"]:
            write_report(results, out)
    means = {m: round(r["metrics"]["ndcg@10"]["mean"], 4) for m, r in results["results"].items()}
    print(f"ndcg@10 mean over seeds: {json.dumps(means)}")
    print(f"wrote {out / 'results.json'}, {out / 'results.md'}, {out / 'results.png'}")
    return 0
