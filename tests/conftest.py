"""Shared pytest fixtures: where the real datasets live, and skipping when they are absent."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from filelock import FileLock

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASETS = PROJECT_ROOT.parent / "shared" / "datasets"


def shared_dataset(name: str) -> Path:
    """Path of a real dataset in ../shared/datasets, or skip the test where it is absent."""
    path = SHARED_DATASETS / name
    if not path.is_dir():
        pytest.skip(f"real dataset {name} not found at {path}")
    return path


@pytest.fixture
def ml_latest_small() -> Path:
    return shared_dataset("ml-latest-small")


@pytest.fixture
def hetrec_movielens_2k() -> Path:
    return shared_dataset("hetrec2011-movielens-2k")


@pytest.fixture
def ml_10m_tags() -> Path:
    return shared_dataset("ml-10m-tags")


# --------------------------------------------------------------------------- service
@pytest.fixture(scope="session")
def service_bundle(tmp_path_factory) -> Path:
    """A real bundle (small synthetic world, CTMVM trained one epoch, exported to ONNX with
    its users both as users.jsonl and as 3 Parquet shards) shared by the service tests; they
    must not modify it (copy it first).

    Under pytest-xdist every worker asks for it: the first builds it in the run's shared
    temporary directory, under a file lock, and the others wait and reuse it (the
    pytest-xdist recipe), so the model is trained once per run, not once per worker.
    """
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return _build_service_bundle(tmp_path_factory.mktemp("service-bundle"))
    shared = tmp_path_factory.getbasetemp().parent / "service-bundle"
    with FileLock(f"{shared}.lock"):
        if not (shared / "bundle" / "manifest.json").is_file():
            shutil.rmtree(shared, ignore_errors=True)  # what a failed build left
            _build_service_bundle(shared)
    return shared / "bundle"


def _build_service_bundle(root: Path) -> Path:
    import torch

    from training.cli import main

    from .model_fixtures import quick_config_file

    data, run, bundle = root / "data", root / "run", root / "bundle"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        world = ["--users", "300", "--items", "120", "--tags", "40"]
        assert main(["prepare", "--dataset", "synthetic", *world, "--out", str(data)]) == 0
        train = ["train", "--data", str(data), "--model", "ctmvm", "--out", str(run)]
        train += ["--config", str(quick_config_file(root))]  # every service test waits on it
        assert main([*train, "--epochs", "1", "--device", "cpu"]) == 0
        export = ["export", "--run", str(run), "--out", str(bundle)]
        # users.jsonl and 3 Parquet shards of the same 300 users: `load` reads the shards
        assert main([*export, "--users-format", "both", "--shard-rows", "128"]) == 0
    finally:
        torch.set_num_threads(threads)
    return bundle


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """One real redis-server (no persistence) for the whole session; tests isolate
    themselves with their own key prefix."""
    from service.store.embedded import EmbeddedRedis

    with EmbeddedRedis(tmp_path_factory.mktemp("redis"), persistence=False) as server:
        yield server
