"""Scoring all tags for real users: torch eager vs the ONNX bundle, unfolded and folded.

For one trained run, exports two ONNX graphs (``score_all`` as is, and the folded inference
path the bundle ships) and times, on the CPU, users scored per second at batch 1 and batch
256 for: the torch model in eager mode (the baseline), the unfolded graph and the folded
graph in onnxruntime. Single-user latency is also measured with one intra-op thread (the
goal: under 2 ms for all tags of movielens-2k on one core). With a CUDA device and
onnxruntime-gpu, the CUDA execution provider is timed too.

    .venv/bin/python benchmarks/bench_export.py \\
        --run artifacts/bench/hetrec-movielens-2k/runs/ctmvm/seed0
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from training.export.folded import inference_module
from training.export.onnx_bundle import export_onnx, load_run, user_inputs


def rate(fn: Callable[[], object], users: int, seconds: float = 2.0) -> tuple[float, float]:
    """(users per second, median ms per call) over repeated calls for ~``seconds``."""
    fn()  # warm-up
    times = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 5:
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return users / median, median * 1000


def session(
    path: Path, threads: int | None, provider: str = "CPUExecutionProvider", optimise: bool = True
):
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    if not optimise:  # diagnostic: what folding is worth when the runtime folds nothing
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), options, providers=[provider])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    checkpoint, data, model, store = load_run(args.run, None)
    users = np.r_[data.users_in("test"), data.users_in("train")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for label, fold in (("unfolded", False), ("folded", True)):
            paths[label] = Path(tmp) / f"{label}.onnx"
            export_onnx(inference_module(model, fold=fold), user_inputs(store, torch.arange(8)),
                        paths[label])  # fmt: skip
        providers = ["CPUExecutionProvider"]
        if "CUDAExecutionProvider" in ort.get_available_providers():
            providers.append("CUDAExecutionProvider")
        for batch in (1, 256):
            user = user_inputs(store, torch.as_tensor(users[:batch], dtype=torch.int64))
            feeds = {k: v.numpy() for k, v in user.items()}
            with torch.no_grad():
                base, base_ms = rate(lambda u=user: model.score_all(u), batch, args.seconds)
            rows.append((batch, "torch eager (CPU)", base, base_ms, 1.0))
            for label, path in paths.items():
                for provider in providers:
                    s = session(path, None, provider)
                    if provider not in s.get_providers():
                        continue
                    r, ms = rate(lambda s=s, f=feeds: s.run(["scores"], f), batch, args.seconds)
                    name = f"onnx {label} ({provider.removesuffix('ExecutionProvider')})"
                    rows.append((batch, name, r, ms, r / base))
                s = session(path, None, optimise=False)
                r, ms = rate(lambda s=s, f=feeds: s.run(["scores"], f), batch, args.seconds)
                rows.append((batch, f"onnx {label} (CPU, ORT optimisation off)", r, ms, r / base))
        user = user_inputs(store, torch.as_tensor(users[:1], dtype=torch.int64))
        feeds = {k: v.numpy() for k, v in user.items()}
        single = {}
        for label, path in paths.items():
            s = session(path, 1)
            single[label] = rate(lambda s=s: s.run(["scores"], feeds), 1, args.seconds)[1]
    print(f"run: {args.run} ({checkpoint['model']}, {data.meta['dataset']}, {data.n_tags} tags)")
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, onnxruntime {ort.__version__}, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads)\n")  # fmt: skip
    print("| batch | scorer | users/s | ms per call | vs torch eager |")
    print("|---:|---|---:|---:|---:|")
    for batch, name, r, ms, ratio in rows:
        print(f"| {batch} | {name} | {r:,.0f} | {ms:.2f} | {ratio:.1f}x |")
    print("\nsingle user, one intra-op thread: " + ", ".join(
        f"{label} {ms:.2f} ms" for label, ms in single.items()))  # fmt: skip


if __name__ == "__main__":
    main()
