"""One training run end to end: train, evaluate on test users, write the run directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from training.data.processed import ProcessedDataset
from training.distributed import World
from training.models import LEARNED
from training.runs import (
    CHECKPOINT,
    PER_USER_FILE,
    plot_training_curve,
    save_checkpoint,
    write_json,
)
from training.trainer import test_report, train_model


def run_config(
    data: ProcessedDataset,
    data_dir: Path,
    model_name: str,
    config: dict,
    seed: int,
    device: str,
    processes: int = 1,
) -> dict[str, Any]:
    """What a run directory's config.json records: enough to tell whether it can be reused
    (``processes``, torchrun's world size, only where there were several)."""
    extra = {"processes": processes} if processes > 1 else {}
    return {
        "model": model_name,
        "seed": seed,
        "device": device,
        "data": str(data_dir),
        "dataset": data.meta["dataset"],
        "family": data.meta["family"],
        "hyperparameters": config,
        **extra,
    }


def finished_run(out: Path, expected: dict[str, Any]) -> dict[str, Any] | None:
    """The test metrics of a run directory that finished (its checkpoint, written last, is
    there) with exactly ``expected`` as its config.json; None where it must run again."""
    files = [out / "config.json", out / "metrics.json", out / PER_USER_FILE, out / CHECKPOINT]
    if not all(f.is_file() for f in files):
        return None
    saved = json.loads(files[0].read_text(encoding="utf-8"))
    if saved != json.loads(json.dumps(expected)):  # compare as JSON: tuples become lists
        return None
    return json.loads(files[1].read_text(encoding="utf-8"))


def run_training(
    data: ProcessedDataset,
    data_dir: Path,
    model_name: str,
    config: dict[str, Any],
    *,
    seed: int,
    device: str,
    out: Path,
    progress: bool = True,
    world: World | None = None,
) -> dict[str, Any]:
    """Train ``model_name`` and write checkpoint, config, metrics, per-user test metrics,
    history and curve to ``out``; returns the test metrics. Under torchrun (``world``) every
    rank trains, rank 0 alone evaluates on the test users and writes ``out``; the other
    ranks return ``{}``."""
    world = world or World()
    if world.is_main:
        out.mkdir(parents=True, exist_ok=True)
    result, store = train_model(
        data, model_name, config, seed=seed, device=device,
        progress=progress and world.is_main, world=world,
    )  # fmt: skip
    if not world.is_main:
        return {}
    report = test_report(result.model, store, data, config["credit"])
    metrics = report.metrics
    metrics.update(train_seconds=round(result.train_seconds, 3), best_epoch=result.best_epoch)
    write_json(
        out / "config.json",
        run_config(data, data_dir, model_name, config, seed, device, world.size),
    )
    write_json(out / "metrics.json", metrics)
    per_user = {k: [None if np.isnan(x) else x for x in v.tolist()]  # JSON has no NaN
                for k, v in report.per_user.items()}  # fmt: skip
    write_json(out / PER_USER_FILE, {"users": report.users.tolist(), **per_user})
    write_json(out / "history.json", result.history)
    save_checkpoint(
        out, model_name, result.model, config,
        {"dataset": data.meta, "data_dir": str(Path(data_dir).resolve()), "seed": seed},
    )  # fmt: skip
    if model_name in LEARNED and result.history:
        plot_training_curve(
            result.history, result.best_epoch, out / "training_curve.png",
            f"{model_name} on {data.meta['dataset']} (seed {seed})",
        )  # fmt: skip
    return metrics
