"""``train``: one model on a prepared data set -> a run directory with test metrics."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from training.config import family_config_path, load_config, resolve
from training.data.processed import ProcessedDataset
from training.model_names import LEARNED, MODELS


def add_common(p: argparse.ArgumentParser, data_help: str | None = None) -> None:
    if data_help is None:
        p.add_argument("--data", type=Path, required=True, help="directory written by `prepare`")
    else:
        p.add_argument("--data", type=Path, nargs="+", required=True, help=data_help)
    p.add_argument(
        "--config", type=Path,
        help="hyper-parameter file (default: the tuned config of the data set's family)",
    )  # fmt: skip
    p.add_argument("--epochs", type=int, help="maximum epochs (overrides the config)")
    p.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto",
        help="where to train (auto: CUDA when torch sees one)",
    )  # fmt: skip


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train and evaluate one model",
        description="Train one model on the train users of a prepared data set, select the "
        "epoch on the validation users, evaluate on the test users, and write "
        "checkpoint.pt, config.json, metrics.json, history.json and training_curve.png. "
        "Under `torchrun --nproc_per_node N -m training train ...` it trains data-parallel "
        "(DDP: gloo on CPU, NCCL on CUDA) and rank 0 writes the run directory.",
    )
    add_common(p)
    p.add_argument("--model", required=True, choices=MODELS, help="model to train")
    p.add_argument("--out", type=Path, required=True, help="run directory (created)")
    p.add_argument("--seed", type=int, default=0, help="seed of initialisation and sampling")
    p.add_argument(
        "--max-batches", type=int,
        help="stop each epoch after this many batches (throughput probes on large worlds)",
    )  # fmt: skip


def model_config(args: argparse.Namespace, data: ProcessedDataset, model: str) -> dict:
    path = args.config or family_config_path(data.meta["family"])
    config = resolve(load_config(path), model, source=str(path))
    if args.epochs is not None:
        if args.epochs < 1:
            raise ValueError(f"--epochs must be >= 1, got {args.epochs}")
        config["epochs"] = args.epochs
    if getattr(args, "max_batches", None) is not None:
        if args.max_batches < 1:
            raise ValueError(f"--max-batches must be >= 1, got {args.max_batches}")
        config["max_batches"] = args.max_batches
    return config


def run(args: argparse.Namespace) -> int:
    # torch loads here, not for --help
    from training.distributed import World, from_env, process_group
    from training.pipeline import run_training
    from training.trainer import pick_device

    world = from_env()  # torchrun's ranks; one process without torchrun
    if world.distributed and args.model not in LEARNED:
        if not world.is_main:
            return 0  # a counting baseline has nothing to train: rank 0 alone runs it
        world = World()
    data = ProcessedDataset.load(args.data)
    config = model_config(args, data, args.model)
    with process_group(world, cuda=pick_device(args.device).type == "cuda"):
        metrics = run_training(
            data, args.data, args.model, config, seed=args.seed, device=args.device,
            out=args.out, world=world,
        )  # fmt: skip
    if not world.is_main:
        return 0
    shown = {k: round(v, 4) for k, v in metrics.items() if k.endswith("@10")}
    print(json.dumps({"model": args.model, "test_users": metrics["test_users"], **shown}))
    print(f"wrote {args.out}")
    return 0
