"""``truth``: users' known true interests (JSON lines) for the A/B simulator."""

from __future__ import annotations

import argparse
from pathlib import Path

from training.data.processed import SPLITS


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "truth",
        help="write users' true tag interests for the A/B simulator",
        description="Write one JSON line per user: {user_id, split, tags: [[tag_id, weight]]}, "
        "the planted affinities of a synthetic world or the tags of real users' held-out "
        "interactions, scaled so each user's strongest interest weighs 1.",
    )
    p.add_argument("--data", type=Path, required=True, help="prepared data set directory")
    p.add_argument("--out", type=Path, required=True, help="output .jsonl file")
    p.add_argument(
        "--splits", default="test", help=f"comma-separated user splits of {SPLITS} (test)"
    )


def run(args: argparse.Namespace) -> int:
    from training.data.processed import ProcessedDataset
    from training.export.catalogue import write_users_jsonl
    from training.export.truth import truth_records, truth_source

    splits = tuple(s.strip() for s in args.splits.split(",") if s.strip())
    unknown = sorted(set(splits) - set(SPLITS))
    if unknown or not splits:
        raise ValueError(f"--splits: expected some of {list(SPLITS)}, got {args.splits!r}")
    data = ProcessedDataset.load(args.data)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    count = write_users_jsonl(args.out, truth_records(data, splits))
    print(f"wrote {count} users' {truth_source(data)} interests to {args.out}")
    return 0
