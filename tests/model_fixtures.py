"""Shared helpers of the model and training-loop tests: a tiny prepared synthetic world,
fast configurations resolved from the shipped ``synthetic`` file, and training batches built
through the trainer's own helpers (so the tests see exactly what training feeds a model)."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from training.config import family_config_path, load_config, resolve
from training.data.processed import ProcessedDataset
from training.data.synthetic import generate_synthetic
from training.models import Dims
from training.protocol import ProtocolConfig, prepare_dataset
from training.trainer import (
    FeatureStore,
    ItemStore,
    _epoch,
    _make_batch,
    dims_of,
    training_rows,
)

CPU = torch.device("cpu")

FAST = {"dim": 8, "hidden": [16, 8], "batch_size": 128, "epochs": 2, "n_views": 3}
"""Small networks for unit tests; ``n_views`` = 3 differs from the shipped 4 on purpose, so
a test can tell that the configured value (not a constant) reached the model."""


@functools.cache
def world(users: int = 120, items: int = 60, tags: int = 24, seed: int = 0) -> ProcessedDataset:
    """A prepared synthetic world (cached: tests must not modify it)."""
    raw = generate_synthetic(users=users, items=items, tags=tags, seed=seed)
    data, _ = prepare_dataset(raw, ProtocolConfig(min_tag_count=1), family="synthetic")
    return data


def model_config(name: str, **overrides: Any) -> dict[str, Any]:
    """The shipped synthetic configuration of ``name`` with ``FAST`` and ``overrides``."""
    config = resolve(load_config(family_config_path("synthetic")), name)
    return {**config, **FAST, **overrides}


def stores(data: ProcessedDataset, config: dict[str, Any]) -> tuple[FeatureStore, ItemStore]:
    return FeatureStore(data, config["max_history"], CPU), ItemStore(data, CPU)


def training_batch(
    data: ProcessedDataset, name: str, config: dict[str, Any], seed: int = 0
) -> dict[str, Any]:
    """The first batch of a training epoch of ``name``, as ``train_model`` builds it."""
    store, items = stores(data, config)
    rows = training_rows(data, name, config)
    epoch_rows, group, batches = _epoch(rows, config, data.n_tags, np.random.default_rng(seed))
    return _make_batch(epoch_rows, group, batches[0], store, items, CPU)


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
