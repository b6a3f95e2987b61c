"""``benchmark``: every (model, split, seed) -> results.json/.md/.png.

``--data`` takes one prepared data set, or several user splits of one data set (``prepare
--seed S``): on small public data the split moves every model more than the gaps between
models, so a verdict should rest on several. Each run goes through the same
``run_training`` as ``train`` (same features, budget and evaluation) into
``OUT/runs/<model>/seed<k>/`` (``OUT/runs/<model>/split<s>/seed<k>/`` with several splits).
The report aggregates over all runs (``training.report``) and compares models user by user
on the same test users (``training.significance``). ``results.json`` is rewritten after
every finished run, so an interrupted benchmark still leaves the numbers it has (marked
incomplete).
"""

from __future__ import annotations

import argparse
import itertools
import json
import shlex
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tqdm import tqdm

from training.commands.train import add_common, model_config
from training.data.processed import ProcessedDataset
from training.model_names import MODELS
from training.report import (
    ABLATION_CHAIN,
    PAIRED_METRICS,
    TARGET,
    aggregate,
    plot_results,
    render_markdown,
)
from training.runs import PER_USER_FILE, write_json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "benchmark",
        help="train and evaluate several models over several seeds, report mean ± std",
        description="Train and evaluate every (model, split, seed) into OUT/runs/, then write "
        "OUT/results.json (per-metric mean, sample std and per-run values), OUT/results.md "
        "(tables: metrics, improvement of ctmvm, ablation youtube -> sve -> sve_pkm -> "
        "ctmvm, paired per-user comparisons with 95% CIs and p-values, checks) and "
        "OUT/results.png (@10 bar chart).",
    )
    add_common(
        p,
        data_help="one directory written by `prepare`, or several splits of one data set "
        "(`prepare --seed S` for different S), pooled in one report",
    )
    p.add_argument(
        "--models", required=True,
        help=f"comma-separated model names, from: {','.join(MODELS)}",
    )  # fmt: skip
    p.add_argument("--seeds", required=True, help="comma-separated integer seeds, e.g. 0,1,2")
    p.add_argument("--out", type=Path, required=True, help="output directory (created)")
    p.add_argument(
        "--resume", action="store_true",
        help="reuse the runs under OUT/runs that finished with the same data, seed and "
        "hyper-parameters (an interrupted benchmark picks up where it stopped)",
    )  # fmt: skip


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
    parts = ["python", "-m", "training", "benchmark", "--data", *map(str, args.data)]
    parts += ["--models", ",".join(models), "--seeds", ",".join(map(str, seeds))]
    parts += ["--out", str(args.out)]
    if args.config is not None:
        parts += ["--config", str(args.config)]
    if args.epochs is not None:
        parts += ["--epochs", str(args.epochs)]
    parts += ["--device", args.device]
    return shlex.join(parts)


def load_splits(paths: list[Path]) -> dict[int, tuple[Path, ProcessedDataset]]:
    """``prepare --seed`` -> (directory, data set); several must be distinct splits of one
    data set under one protocol, or pooling them would compare different things."""
    splits: dict[int, tuple[Path, ProcessedDataset]] = {}
    first_path, first = paths[0], ProcessedDataset.load(paths[0])
    reference = {k: v for k, v in first.meta["protocol"].items() if k != "seed"}
    for path in paths:
        data = first if path == first_path else ProcessedDataset.load(path)
        protocol = {k: v for k, v in data.meta["protocol"].items() if k != "seed"}
        same = data.meta["dataset"] == first.meta["dataset"] and protocol == reference
        if not same or data.tag_names != first.tag_names:
            raise ValueError(
                f"--data {path}: not a split of the same data set and protocol as "
                f"{first_path} ({data.meta['dataset']} vs {first.meta['dataset']}); "
                "pool only `prepare --seed S` outputs of one data set"
            )
        split = int(data.meta["protocol"]["seed"])
        if split in splits:
            raise ValueError(f"--data {path}: split {split} is already {splits[split][0]}")
        splits[split] = (path, data)
    return splits


def run_label(split: int, seed: int, several_splits: bool) -> tuple[str | int, str]:
    """How a run is keyed in ``results.json`` (its seed, or ``split<s>/seed<k>``) and its
    directory under ``OUT/runs/<model>/``."""
    if several_splits:
        return f"split{split}/seed{seed}", f"split{split}/seed{seed}"
    return seed, f"seed{seed}"


def _summary(
    per_model: dict[str, dict[Any, dict[str, Any]]], run_dirs: dict[str, dict[Any, Path]]
) -> dict[str, Any]:
    summary = {}
    for model, per_run in per_model.items():
        if per_run:
            summary[model] = aggregate(per_run)
            summary[model]["runs"] = {str(k): str(run_dirs[model][k]) for k in sorted(per_run)}
    return summary


def comparisons(models: list[str]) -> list[tuple[str, str]]:
    """(a, b) pairs to test: ctmvm against every other model, then each ablation step."""
    pairs = [(TARGET, m) for m in models if m != TARGET] if TARGET in models else []
    chain = [m for m in ABLATION_CHAIN if m in models]
    steps = [(after, before) for before, after in itertools.pairwise(chain)]
    return pairs + [step for step in steps if step not in pairs]


def paired(per_user: dict[str, dict[int, list[dict]]], models: list[str]) -> list[dict[str, Any]]:
    """User-level paired comparisons of the finished runs (``training.significance``)."""
    from training.significance import paired_difference  # scipy.stats: only when reporting

    out = []
    for a, b in comparisons(models):
        if not per_user[a] or not per_user[b]:
            continue
        entry: dict[str, Any] = {"a": a, "b": b}
        for key in PAIRED_METRICS:
            entry[key] = paired_difference(per_user[a], per_user[b], key)
        if entry[PAIRED_METRICS[0]] is not None:
            out.append(entry)
    return out


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
    from training.pipeline import finished_run, run_config, run_training  # torch loads here

    models = parse_models(args.models)
    seeds = parse_seeds(args.seeds)
    splits = load_splits(args.data)
    several = len(splits) > 1
    # resolve every config first: a missing hyper-parameter fails before any training
    first = next(iter(splits.values()))[1]
    configs = {m: model_config(args, first, m) for m in models}
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "command": command_line(args, models, seeds),
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "data": str(args.data[0]) if not several else [str(p) for p in args.data],
        "dataset": first.meta,
        "splits": sorted(splits),
        "seeds": seeds,
        "models": models,
        "device": args.device,
        "epochs": args.epochs,
        "complete": False,
        "hyperparameters": configs,
        "results": {},
        "paired": [],
    }
    per_model: dict[str, dict[Any, dict[str, Any]]] = {m: {} for m in models}
    run_dirs: dict[str, dict[Any, Path]] = {m: {} for m in models}
    per_user: dict[str, dict[int, list[dict]]] = {m: {} for m in models}
    plan = [(m, split, s) for m in models for split in sorted(splits) for s in seeds]
    try:
        with tqdm(total=len(plan), desc="benchmark", unit="run", disable=None) as bar:
            for model, split, seed in plan:
                label, relative = run_label(split, seed, several)
                bar.set_postfix_str(f"{model} {relative}")
                run_dir = out / "runs" / model / relative
                data_dir, data = splits[split]
                expected = run_config(data, data_dir, model, configs[model], seed, args.device)
                metrics = finished_run(run_dir, expected) if args.resume else None
                reused = " (reused)" if metrics is not None else ""
                if metrics is None:
                    metrics = run_training(
                        data, data_dir, model, configs[model],
                        seed=seed, device=args.device, out=run_dir, progress=False,
                    )  # fmt: skip
                per_model[model][label] = metrics
                run_dirs[model][label] = run_dir
                if (run_dir / PER_USER_FILE).is_file():
                    users = json.loads((run_dir / PER_USER_FILE).read_text(encoding="utf-8"))
                    per_user[model].setdefault(split, []).append(users)
                bar.write(f"{model:8s} {relative}: {_headline(metrics)} -> {run_dir}{reused}")
                results["results"] = _summary(per_model, run_dirs)
                write_json(out / "results.json", results)
                bar.update(1)
        results["complete"] = True
    finally:
        # an interrupted or failed benchmark still reports the runs it finished
        if results["results"]:
            results["paired"] = paired(per_user, models)
            write_report(results, out)
    means = {m: round(r["metrics"]["ndcg@10"]["mean"], 4) for m, r in results["results"].items()}
    print(f"ndcg@10 mean over runs: {json.dumps(means)}")
    print(f"wrote {out / 'results.json'}, {out / 'results.md'}, {out / 'results.png'}")
    return 0
