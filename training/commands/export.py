"""``export``: a training run -> a model bundle the service loads (DESIGN §5)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from training.commands.features import add_shard_rows


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a run's inference path to an ONNX model bundle",
        description="Export the inference path of a trained run (main network, AMVM "
        "substitute encoders and aggregator; no privileged input, no supplementary network) "
        "to BUNDLE_DIR/model.onnx with user-independent terms folded into constants, verify "
        "it against the torch model on real users, and write manifest.json, themes.json and "
        "the users' features (users.jsonl and/or Parquet shards under users/).",
    )
    p.add_argument("--run", type=Path, required=True, help="run directory written by `train`")
    p.add_argument("--out", type=Path, required=True, help="bundle directory (replaced)")
    p.add_argument(
        "--data", type=Path, help="prepared data set (default: the one the run was trained on)"
    )
    p.add_argument(
        "--no-fold", action="store_true", help="export score_all as is (no constant folding)"
    )
    p.add_argument(
        "--parity-users", type=int, default=256, help="real users scored to check parity (256)"
    )
    p.add_argument(
        "--tolerance", type=float, default=1e-4, help="max abs score difference allowed (1e-4)"
    )
    p.add_argument("--max-themes", type=int, default=200, help="themes in themes.json (200)")
    p.add_argument(
        "--users-format",
        choices=("jsonl", "parquet", "both"),
        default="jsonl",
        help="the users' features as users.jsonl, as Parquet shards users/part-NNNNN.parquet, "
        "or both (jsonl)",
    )
    add_shard_rows(p)


def run(args: argparse.Namespace) -> int:
    from training.export.onnx_bundle import ExportError, export_bundle  # onnx loads lazily

    try:
        manifest = export_bundle(
            args.run,
            args.out,
            data_dir=args.data,
            fold=not args.no_fold,
            parity_users=args.parity_users,
            tolerance=args.tolerance,
            max_themes=args.max_themes,
            users_format=args.users_format,
            shard_rows=args.shard_rows,
        )
    except ExportError as err:
        print(f"error: export failed its self-check: {err}", file=sys.stderr)
        return 1
    summary = {
        "model_version": manifest["model_version"],
        "tags": len(manifest["tags"]),
        "inputs": [i["name"] for i in manifest["inputs"]],
        "parity_max_abs_diff": manifest["parity"]["max_abs_diff"],
    }
    print(json.dumps(summary, indent=2))
    print(f"wrote {args.out}")
    return 0
