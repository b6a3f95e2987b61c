"""Shared pytest fixtures: where the real datasets live, and skipping when they are absent."""

from __future__ import annotations

from pathlib import Path

import pytest

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
