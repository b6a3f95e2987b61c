"""``diagnose``: the privileged-feature oracle check of a trained run (``training.diagnose``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from training.runs import write_json  # light: torch loads inside run()

OUTPUT = "diagnose.json"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "diagnose",
        help="does a trained run use its privileged features? (oracle check)",
        description="Rank the test users' tags with the trained network given the TRUE "
        "privileged features (X_p) of their held-out items, and given their history X_p; a "
        "network whose privileged pathway learned something ranks better with the true "
        "X_p. A counting oracle with the same inputs shows how much there was to learn. "
        f"Prints a table and writes RUN/{OUTPUT}.",
    )
    p.add_argument("--run", type=Path, required=True, help="run directory written by `train`")
    p.add_argument(
        "--data", type=Path, help="prepared data set (default: the one the run was trained on)"
    )


def render(rows: list[dict]) -> str:
    lines = [
        "| scorer | given | NDCG@10 | novel NDCG@10 | repeat NDCG@10 |",
        "|---|---|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['scorer']} | {row['input']} | {row['ndcg@10']:.4f} "
            f"| {row['novel_ndcg@10']:.4f} | {row['repeat_ndcg@10']:.4f} |"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from training.diagnose import diagnose
    from training.runs import load_run

    checkpoint, data, model, store = load_run(args.run, args.data)
    rows = diagnose(model, store, data)
    print(f"{checkpoint['model']} on {data.meta['dataset']}: {rows[0]['users']} test users")
    print(render(rows))
    write_json(Path(args.run) / OUTPUT, {"model": checkpoint["model"], "rows": rows})
    print(f"wrote {Path(args.run) / OUTPUT}")
    return 0
