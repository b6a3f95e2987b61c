"""Build-time check of a serving image: the libraries the API needs import, and link,
inside the image, so a broken image fails ``docker build`` instead of its first request.

A GPU image that installs onnxruntime-gpu and faiss-gpu but lacks the CUDA or cuDNN
libraries they were built against still imports onnxruntime: the CUDA provider is a
separate library, loaded at the first session, and without it the service silently
scores on the CPU. So the check resolves that library's dependencies (``ldd``) and asks
faiss for its GPU classes, which need the CUDA runtime at import.

    python deploy/check_image.py --variant gpu --no-torch

Exit 0 with one summary line, or 1 with the problems. No GPU is needed (none is visible
during ``docker build``): this checks the image, not the machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
from pathlib import Path

CUDA_PROVIDER = "libonnxruntime_providers_cuda.so"
FROM_THE_DRIVER = ("libcuda.so", "libnvidia-ml.so")
"""Mounted from the host by the NVIDIA container toolkit at run time, never in an image."""


def missing_libraries(library: Path) -> list[str]:
    """The shared libraries ``library`` needs that the dynamic linker cannot find."""
    linked = subprocess.run(["ldd", str(library)], capture_output=True, text=True, check=False)
    missing = [line.split()[0] for line in linked.stdout.splitlines() if "not found" in line]
    return [name for name in missing if not name.startswith(FROM_THE_DRIVER)]


def check(variant: str, no_torch: bool) -> tuple[list[str], list[str]]:
    """(problems, facts) of this Python environment for ``variant``."""
    problems: list[str] = []
    facts: list[str] = []
    try:
        import faiss
        import onnxruntime as ort

        import service.app  # noqa: F401  (the API and everything it imports)
    except ImportError as error:
        return [f"import failed: {error}"], facts
    providers = ort.get_available_providers()
    facts.append(f"onnxruntime {ort.__version__} {providers}")
    facts.append(f"faiss {faiss.__version__}")
    if variant == "gpu":
        if "CUDAExecutionProvider" not in providers:
            problems.append(f"onnxruntime has no CUDAExecutionProvider ({providers}): "
                            "onnxruntime-gpu is not the onnxruntime installed")  # fmt: skip
        provider = Path(ort.__file__).parent / "capi" / CUDA_PROVIDER
        if not provider.is_file():
            problems.append(f"{provider} is missing")
        else:
            missing = missing_libraries(provider)
            if missing:
                problems.append(
                    f"{CUDA_PROVIDER} cannot load, missing {missing}: the base image's CUDA "
                    "or cuDNN does not match the CUDA onnxruntime-gpu was built for"
                )
        if not hasattr(faiss, "StandardGpuResources"):
            problems.append("faiss has no GPU support (faiss-cpu installed instead of faiss-gpu)")
        else:
            try:
                facts.append(f"faiss sees {faiss.get_num_gpus()} GPU(s) now")
            except RuntimeError as error:  # no driver while the image builds
                facts.append(f"faiss GPU count unavailable here ({str(error).strip()[:80]})")
    elif "CPUExecutionProvider" not in providers:
        problems.append(f"onnxruntime has no CPUExecutionProvider ({providers})")
    if no_torch and importlib.util.find_spec("torch") is not None:
        problems.append("torch is installed: the serving image must not carry it")
    return problems, facts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=["cpu", "gpu"], required=True)
    parser.add_argument("--no-torch", action="store_true", help="fail if torch is installed")
    args = parser.parse_args(argv)
    problems, facts = check(args.variant, args.no_torch)
    if problems:
        for problem in problems:
            print(f"image check ({args.variant}): {problem}", file=sys.stderr)
        return 1
    print(f"image check ({args.variant}) passed: {'; '.join(facts)}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    raise SystemExit(main())
