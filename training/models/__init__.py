"""Model registry: one name per model of the benchmark (DESIGN §2, §10)."""

from __future__ import annotations

from torch import nn

from training.model_names import COUNTING, LEARNED, MODELS, USES_SVE
from training.models.ctmvm import CTMVM
from training.models.mlp import Dims, MainNetwork
from training.models.utpm import UTPM


def build_model(name: str, dims: Dims, config: dict) -> nn.Module:
    """A fresh learned model; ``config`` is the resolved configuration of that model."""
    if name == "youtube_plain":
        return MainNetwork(dims, {**config, "target_aware": False})
    if name in ("youtube", "sve"):
        return MainNetwork(dims, config)
    if name == "utpm":
        return UTPM(dims, config)
    if name == "sve_pkm":
        return CTMVM(dims, {**config, "n_views": 1})
    if name == "ctmvm":
        return CTMVM(dims, config)
    raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")


__all__ = ["COUNTING", "LEARNED", "MODELS", "USES_SVE", "Dims", "build_model"]
