"""Write a model bundle (DESIGN §5): model.onnx, manifest.json, themes.json, and the users'
features as users.jsonl and/or Parquet shards (users/part-NNNNN.parquet).

The ONNX graph is the inference path only: user feature bags in, ``scores`` for every tag
out. It takes no input about the target item (no privileged features), and CTMVM's
supplementary network is not part of it. The export verifies itself: ``onnx.checker``,
then onnxruntime against the torch model on real users; a difference above the tolerance
aborts the export and leaves no bundle behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import shutil
import tempfile
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import Tensor, nn

from training.data.processed import ProcessedDataset
from training.export.catalogue import (
    build_themes,
    user_feature_records,
    write_themes_json,
    write_users_jsonl,
)
from training.export.folded import inference_module
from training.export.shards import DEFAULT_SHARD_ROWS, SHARDS_DIR, write_user_shards
from training.runs import load_run
from training.trainer import FeatureStore

FORMAT_VERSION = 1
USERS_FORMATS = ("jsonl", "parquet", "both")
OPSET = 18
RELATIVE_FLOOR = 1e-6
# torch's exporter warns once per torchvision op that torchvision (which we never use) is not
# installed: noise on every export
_TORCHVISION_NOISE = "torch.onnx._internal.exporter._registration"


class ExportError(RuntimeError):
    """The export cannot produce a faithful bundle."""


class _Positional(nn.Module):
    """ONNX inputs are positional: map them back to the named user batch."""

    def __init__(self, module: nn.Module, names: list[str]) -> None:
        super().__init__()
        self.module, self.names = module, names

    def forward(self, *inputs: Tensor) -> Tensor:
        return self.module(dict(zip(self.names, inputs, strict=True)))


def export_onnx(module: nn.Module, example: dict[str, Tensor], path: Path) -> None:
    """torch.export -> ONNX with a dynamic batch and dynamic history lengths."""
    names = list(example)
    batch = torch.export.Dim("batch", min=1)
    lengths: dict[str, Any] = {}
    shapes = []
    for name in names:
        if name == "attributes":
            shapes.append({0: batch})
            continue
        bag = name.removesuffix("_w")
        lengths.setdefault(bag, torch.export.Dim(f"{bag}_len", min=1))
        shapes.append({0: batch, 1: lengths[bag]})
    # the exporter narrates every step and warns about axis renames: keep the CLI quiet
    registry_log = logging.getLogger(_TORCHVISION_NOISE)
    level = registry_log.level
    registry_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _Positional(module, names),
                tuple(example[n] for n in names),
                str(path),
                input_names=names,
                output_names=["scores"],
                dynamic_shapes=[tuple(shapes)],
                opset_version=OPSET,
                dynamo=True,
                verbose=False,
            )
    finally:
        registry_log.setLevel(level)
    # one self-contained file: the exporter may put the weights next to it
    onnx.save_model(onnx.load(str(path)), str(path), save_as_external_data=False)
    path.with_name(path.name + ".data").unlink(missing_ok=True)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def score_difference(got: np.ndarray, expected: np.ndarray) -> tuple[float, float]:
    """(max |got − expected|, max |got − expected| / (|expected| + 1e-6)).

    Scores are probabilities over the tag vocabulary, most of them tiny, so an absolute
    tolerance alone would pass nearly anything; the relative one bounds every tag."""
    diff = np.abs(got - expected)
    return float(diff.max()), float((diff / (np.abs(expected) + RELATIVE_FLOOR)).max())


def parity(path: Path, model: nn.Module, user: dict[str, Tensor]) -> tuple[float, float]:
    """``score_difference`` of onnxruntime against torch on the given users."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {i.name: user[i.name].numpy() for i in session.get_inputs()}
    got = session.run(["scores"], feeds)[0]
    with torch.no_grad():
        expected = model.score_all(user).numpy()
    return score_difference(got, expected)


def user_inputs(store: FeatureStore, users: Tensor) -> dict[str, Tensor]:
    """The ONNX inputs of some users; ``attributes`` only when the data set has any."""
    batch = store.gather(users)
    if batch["attributes"].shape[1] == 0:
        del batch["attributes"]
    return batch


def export_bundle(
    run_dir: Path,
    out: Path,
    *,
    data_dir: Path | None = None,
    fold: bool = True,
    parity_users: int = 256,
    tolerance: float = 1e-4,
    relative_tolerance: float = 1e-3,
    max_themes: int = 200,
    users_format: str = "jsonl",
    shard_rows: int = DEFAULT_SHARD_ROWS,
) -> dict[str, Any]:
    """Export ``run_dir`` to the bundle directory ``out``; returns the manifest.

    ``users_format``: the users' features as ``users.jsonl`` ("jsonl"), as Parquet shards
    of ``shard_rows`` rows under ``users/`` ("parquet"), or both."""
    if users_format not in USERS_FORMATS:
        raise ValueError(f"users format must be one of {USERS_FORMATS}, got {users_format!r}")
    checkpoint, data, model, store = load_run(run_dir, data_dir)
    module = inference_module(model, fold=fold)
    users = np.r_[data.users_in("test"), data.users_in("valid"), data.users_in("train")]
    users = users[:parity_users]  # real users, test users first
    check = user_inputs(store, torch.as_tensor(users, dtype=torch.int64))
    with torch.no_grad():
        folded = score_difference(module(check).numpy(), model.score_all(check).numpy())
    if not (folded[0] <= tolerance and folded[1] <= relative_tolerance):
        raise ExportError(
            f"folded graph differs from the model by {folded[0]:.2e} (relative {folded[1]:.2e})"
        )
    out = Path(out)
    with tempfile.TemporaryDirectory(dir=out.parent if out.parent.exists() else None) as tmp:
        staging = Path(tmp)
        model_path = staging / "model.onnx"
        export_onnx(module, user_inputs(store, torch.arange(min(8, data.n_users))), model_path)
        onnx.checker.check_model(str(model_path), full_check=True)
        max_diff, max_relative = parity(model_path, model, check)
        if not (max_diff <= tolerance and max_relative <= relative_tolerance):
            raise ExportError(
                f"onnxruntime scores differ from torch by {max_diff:.2e} (tolerance "
                f"{tolerance:.0e}), relative {max_relative:.2e} (tolerance "
                f"{relative_tolerance:.0e}) on {len(users)} users; no bundle written"
            )
        write_themes_json(staging / "themes.json", build_themes(data, max_themes=max_themes))
        max_history = checkpoint["config"]["max_history"]
        if users_format in ("jsonl", "both"):
            write_users_jsonl(staging / "users.jsonl", user_feature_records(data, max_history))
        if users_format in ("parquet", "both"):
            write_user_shards(
                staging / SHARDS_DIR,
                user_feature_records(data, max_history),
                rows_per_shard=shard_rows,
            )
        parity_check = {"max_abs_diff": max_diff, "tolerance": tolerance, "users": len(users)}
        manifest = _manifest(checkpoint, data, store, run_dir, staging, parity_check)
        (staging / "manifest.json").write_text(
            json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(staging, out)
        out.chmod(0o755)  # the staging directory is private (0700); the bundle is not
    return manifest


def _manifest(
    checkpoint: dict,
    data: ProcessedDataset,
    store: FeatureStore,
    run_dir: Path,
    staging: Path,
    parity_check: dict[str, Any],
) -> dict[str, Any]:
    created = datetime.now(UTC).replace(microsecond=0)
    model_sha = sha256(staging / "model.onnx")
    name = checkpoint["model"]
    inputs = []
    for input_name, tensor in user_inputs(store, torch.arange(1)).items():
        feature = (
            "attributes" if input_name == "attributes"
            else input_name.removeprefix("hist_").removesuffix("_w")
        )  # fmt: skip
        inputs.append(
            {
                "name": input_name,
                "dtype": "float32" if tensor.dtype == torch.float32 else "int64",
                "shape": ["batch", int(tensor.shape[1])],
                "feature": feature,
                "role": "weights" if input_name.endswith("_w") else "ids",
            }
        )
    metrics_path = Path(run_dir) / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    files = {
        f.relative_to(staging).as_posix(): {"sha256": sha256(f), "bytes": f.stat().st_size}
        for f in sorted(staging.rglob("*"))
        if f.is_file() and f.name != "manifest.json"
    }  # shards are listed as users/part-NNNNN.parquet
    return {
        "format_version": FORMAT_VERSION,
        "model_name": name,
        "model_version": f"{name}-{created.strftime('%Y%m%dT%H%M%SZ')}-{model_sha[:8]}",
        "created_at": created.isoformat(),
        "dataset": data.meta,
        "tags": list(data.tag_names),
        "max_history": int(checkpoint["config"]["max_history"]),
        "inputs": inputs,
        "outputs": [{"name": "scores", "dtype": "float32", "shape": ["batch", data.n_tags]}],
        "privileged": {f: list(v) for f, v in data.privileged_names.items()},
        "attributes": {a: list(v) for a, v in data.attribute_names.items()},
        "metrics": metrics,
        "parity": parity_check,
        "files": files,
    }
