"""Training configuration: one JSON file per data set family, resolved per model.

A file has ``defaults`` (every hyper-parameter) and ``models`` (per-model overrides). The
shipped files in ``training/configs/`` hold the values tuned on validation users; without
``--config``, ``train`` picks the file of the prepared data set's family.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

REQUIRED = (
    "dim", "hidden", "lr", "weight_decay", "batch_size", "epochs", "patience",
    "max_history", "credit", "tau",
)  # fmt: skip
MODEL_REQUIRED = {"ctmvm": ("rho", "n_views"), "sve_pkm": ("rho",)}


def family_config_path(family: str) -> Path:
    path = Path(str(resources.files("training") / "configs" / f"{family}.json"))
    if not path.is_file():
        raise FileNotFoundError(f"no shipped config for data set family {family!r} ({path})")
    return path


def load_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}:{err.lineno}: invalid JSON: {err.msg}") from err
    if not isinstance(config.get("defaults"), dict):
        raise ValueError(f"{path}: a config needs a 'defaults' object")
    return config


def resolve(config: dict[str, Any], model: str, source: str = "config") -> dict[str, Any]:
    """The flat hyper-parameters of ``model``: defaults overridden by the model's section."""
    resolved = {**config["defaults"], **config.get("models", {}).get(model, {})}
    missing = [k for k in (*REQUIRED, *MODEL_REQUIRED.get(model, ())) if k not in resolved]
    if missing:
        raise ValueError(f"{source}: missing hyper-parameter(s) {', '.join(missing)} for {model}")
    if resolved["credit"] not in ("contains", "covers"):
        raise ValueError(f"{source}: credit must be 'contains' or 'covers'")
    if resolved["tau"] <= 0:
        raise ValueError(f"{source}: tau must be > 0")
    if resolved.get("credit_scale", "count") not in ("count", "fraction"):
        raise ValueError(f"{source}: credit_scale must be 'count' or 'fraction'")
    if resolved.get("aux_view", "hard") not in ("hard", "soft"):
        raise ValueError(f"{source}: aux_view must be 'hard' or 'soft'")
    if resolved.get("credit_method", "shapley") not in ("shapley", "router"):
        raise ValueError(f"{source}: credit_method must be 'shapley' or 'router'")
    if resolved.get("repeat_mode", "counting") not in ("counting", "learned"):
        raise ValueError(f"{source}: repeat_mode must be 'counting' or 'learned'")
    return resolved
