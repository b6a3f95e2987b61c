"""onnxruntime session of a bundle's model: provider choice and scoring.

``auto`` asks for CUDA first and CPU second. onnxruntime silently drops a provider it
cannot load (a CUDA wheel without a GPU, a missing cuDNN), so the provider in use is read
back from the session, never assumed from ``get_available_providers()``.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from service.model.bundle import SCORES_OUTPUT, Bundle

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


class ProviderError(RuntimeError):
    """The requested execution provider cannot be used on this machine."""


def requested_providers(device: str) -> list[str]:
    """Providers to ask onnxruntime for, in order of preference."""
    if device == "cpu":
        return [CPU]
    if device == "cuda" and CUDA not in ort.get_available_providers():
        raise ProviderError(
            "device 'cuda' requested but this onnxruntime has no CUDA provider "
            f"(available: {ort.get_available_providers()}); install the 'gpu' extra"
        )
    if device not in ("auto", "cuda"):
        raise ProviderError(f"unknown device {device!r} (expected auto, cuda or cpu)")
    return [CUDA, CPU] if CUDA in ort.get_available_providers() else [CPU]


class ModelRuntime:
    """One inference session; ``run`` is safe to call from several threads."""

    def __init__(self, bundle: Bundle, device: str = "auto", intra_op_threads: int = 0) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        # idle pool threads would spin between the service's short calls, burning the CPU
        # the event loop needs (17 vs 10 CPU-s per 10 s at the same rate, RESULTS.md)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            str(bundle.model_path), options, providers=requested_providers(device)
        )
        self.provider = self.session.get_providers()[0]
        if device == "cuda" and self.provider != CUDA:
            raise ProviderError(
                f"device 'cuda' requested but onnxruntime fell back to {self.provider} "
                "(is a GPU visible and are the CUDA libraries installed?)"
            )
        self.n_tags = bundle.n_tags

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Scores [batch, n_tags] float32 for encoded user features."""
        return self.session.run([SCORES_OUTPUT], feeds)[0]
