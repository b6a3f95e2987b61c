"""Shared helpers of the model and training-loop tests: a tiny prepared synthetic world,
fast configurations resolved from the shipped ``synthetic`` file, and training batches built
through the trainer's own helpers (so the tests see exactly what training feeds a model)."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from training.config import family_config_path, load_config, resolve
from training.data.processed import ProcessedDataset
from training.data.synthetic import generate_synthetic
from training.features import tag_cooccurrence_counts, tag_popularity, tags_used
from training.models import Dims, build_model
from training.protocol import ProtocolConfig, prepare_dataset
from training.samples import training_samples
from training.trainer import FeatureStore, ItemStore, dims_of, fill_counts, make_batch

CPU = torch.device("cpu")
WITH_ROWS = ("sve_pkm", "ctmvm")

FAST = {
    "dim": 8,
    "hidden": [16, 8],
    "batch_size": 16,
    "epochs": 2,
    "n_views": 3,
    "item_tag_pretrain_steps": 20,
}
"""Small networks for unit tests; ``n_views`` = 3 differs from the shipped 4 on purpose, so
a test can tell that the configured value (not a constant) reached the model."""


@functools.cache
def world(users: int = 120, items: int = 60, tags: int = 24, seed: int = 0) -> ProcessedDataset:
    """A prepared synthetic world (cached: tests must not modify it)."""
    raw = generate_synthetic(users=users, items=items, tags=tags, seed=seed)
    data, _ = prepare_dataset(raw, ProtocolConfig(min_tag_count=1), family="synthetic")
    return data


QUICK = {"item_tag_pretrain_steps": 20, "privileged_negatives": 8, "item_tag_rows": 64}
"""What makes CTMVM training cheap without changing what a test checks: the P(tag | X_p)
pre-training and the sampled-softmax rows dominate a tiny world's run."""


def quick_config_file(folder: Path) -> Path:
    """The shipped synthetic config file made ``QUICK``, for tests that train through the CLI
    (``--config``)."""
    config = load_config(family_config_path("synthetic"))
    config["defaults"].update(QUICK)
    path = folder / "quick-synthetic.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


def model_config(name: str, **overrides: Any) -> dict[str, Any]:
    """The shipped synthetic configuration of ``name`` with ``FAST`` and ``overrides``."""
    config = resolve(load_config(family_config_path("synthetic")), name)
    return {**config, **FAST, **overrides}


def stores(data: ProcessedDataset, config: dict[str, Any]) -> tuple[FeatureStore, ItemStore]:
    store = FeatureStore(data, config["max_history"], CPU)
    store.add_counted_tags(tags_used(data))
    return store, ItemStore(data, CPU)


def fresh_model(
    data: ProcessedDataset, name: str, config: dict[str, Any], seed: int = 0
) -> nn.Module:
    """A new model with the train counts the trainer would give it."""
    torch.manual_seed(seed)
    model = build_model(name, dims(data, config), config)
    fill_counts(model, tag_popularity(data), tag_cooccurrence_counts(data))
    return model


def training_batch(
    data: ProcessedDataset, name: str, config: dict[str, Any], seed: int = 0
) -> dict[str, Any]:
    """A training batch of ``name`` (its first ``batch_size`` users), as ``train_model``
    builds it."""
    store, items = stores(data, config)
    samples = training_samples(data, name, config)
    index = np.arange(min(config["batch_size"], len(samples)))
    rng = np.random.default_rng(seed)
    return make_batch(samples, index, store, items, config, rng, name in WITH_ROWS)


def user_batch(data: ProcessedDataset, config: dict[str, Any], users: np.ndarray) -> dict:
    """User features only (the inference input: no item, no privileged target)."""
    store, _ = stores(data, config)
    return store.gather(torch.as_tensor(users, dtype=torch.int64))


def dims(data: ProcessedDataset, config: dict[str, Any]) -> Dims:
    store, _ = stores(data, config)
    return dims_of(data, store)


@contextmanager
def single_thread() -> Iterator[None]:
    """One intra-op thread: these networks are tiny, and on a loaded 2-core machine the
    thread pool's spinning costs far more than it saves (results do not depend on it)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
