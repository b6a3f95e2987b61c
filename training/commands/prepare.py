"""``prepare``: raw data set -> processed data set (protocol + Shapley values + stats)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from tqdm import tqdm

from training.data.errors import DataFormatError
from training.data.registry import DATASETS, guess_dataset
from training.protocol import CREDITS, ProtocolConfig, prepare_dataset

_STEPS = (
    "load",
    "filter tags",
    "split users",
    "split history/samples",
    "sample negatives",
    "privileged values",
    "shapley values",
    "save",
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    datasets = "\n".join(f"  {name:17s} {spec.description}" for name, spec in DATASETS.items())
    p = sub.add_parser(
        "prepare",
        help="turn a raw data set into training samples (protocol, Shapley/SVE weights)",
        description="Load a data set, apply the CTMVM protocol (tag filter, 80/20 user split "
        "with a validation slice, chronological 80/20 history/samples, negatives, rare "
        "privileged values -> 'others'), compute Shapley values and SVE weights, and write "
        "dataset.npz, vocab.json, meta.json and stats.json to --out.\n\ndatasets:\n" + datasets,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--dataset", required=True, choices=sorted(DATASETS), help="input format")
    p.add_argument(
        "--path", type=Path, help="directory holding the raw files (not used for synthetic)"
    )
    p.add_argument("--out", type=Path, required=True, help="output directory (created)")
    p.add_argument("--seed", type=int, default=0, help="seed of splits and negatives (0)")
    p.add_argument(
        "--min-tag-count",
        type=int,
        help="drop tags seen fewer times (default: 5 for MovieLens families, 15 for "
        "delicious and lastfm, 1 for synthetic)",
    )
    p.add_argument("--test-fraction", type=float, default=0.2, help="share of test users (0.2)")
    p.add_argument(
        "--valid-fraction",
        type=float,
        default=0.1,
        help="share of train users held out for model selection (0.1)",
    )
    p.add_argument(
        "--history-fraction",
        type=float,
        default=0.8,
        help="chronological share of each user's interactions used as history (0.8)",
    )
    p.add_argument(
        "--negative-ratio",
        type=int,
        default=1,
        help="negatives drawn per positive sample when the data has none (1)",
    )
    p.add_argument(
        "--tau",
        type=float,
        help="SVE temperature for the stored weights (default: 0.1 MovieLens, 0.5 others)",
    )
    p.add_argument(
        "--credit",
        choices=CREDITS,
        default="contains",
        help="Shapley credit function of the stored weights (contains)",
    )
    synthetic = p.add_argument_group("synthetic data sizes")
    synthetic.add_argument("--users", type=int, default=2000, help="users (2000)")
    synthetic.add_argument("--items", type=int, default=1000, help="items (1000)")
    synthetic.add_argument("--tags", type=int, default=200, help="tags (200)")


def run(args: argparse.Namespace) -> int:
    spec = DATASETS[args.dataset]
    if spec.needs_path and args.path is None:
        raise ValueError(f"--path is required for --dataset {args.dataset}")
    if spec.needs_path and not args.path.is_dir():
        raise FileNotFoundError(f"{args.path}: no such directory")
    config = ProtocolConfig(
        min_tag_count=spec.min_tag_count if args.min_tag_count is None else args.min_tag_count,
        seed=args.seed,
        test_fraction=args.test_fraction,
        valid_fraction=args.valid_fraction,
        history_fraction=args.history_fraction,
        negative_ratio=args.negative_ratio,
        tau=spec.tau if args.tau is None else args.tau,
        credit=args.credit,
    )
    started = time.perf_counter()
    with tqdm(total=len(_STEPS), desc="prepare", unit="step", disable=None) as bar:

        def step(name: str) -> None:
            bar.set_postfix_str(name)
            bar.n = _STEPS.index(name)
            bar.refresh()

        step("load")
        try:
            raw = spec.load(
                args.path, users=args.users, items=args.items, tags=args.tags, seed=args.seed
            )
        except (FileNotFoundError, DataFormatError) as err:
            guess = guess_dataset(args.path) if args.path is not None else None
            if guess is None or guess == args.dataset:
                raise
            raise ValueError(f"{err}; {args.path} looks like --dataset {guess}") from err
        processed, stats = prepare_dataset(raw, config, family=spec.family, on_step=step)
        step("save")
        processed.save(args.out, stats)
        bar.n = len(_STEPS)
        bar.refresh()
    elapsed = time.perf_counter() - started
    print(
        f"{stats['dataset']}: {stats['users']:,} users ({stats['train_users']:,} train, "
        f"{stats['valid_users']:,} valid, {stats['test_users']:,} test), "
        f"{stats['items']:,} items, {stats['tags']:,} tags, "
        f"{stats['train_samples']:,} train samples"
    )
    print(f"wrote {args.out} in {elapsed:.1f}s (every count: {args.out / 'stats.json'})")
    return 0
