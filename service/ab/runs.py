"""Experiment runs: the counts of an experiment are keyed by its configuration.

Changing an experiment's salt (a fresh run, README) or its arms (names, weights,
rankers) reassigns users, so counts from before the change must not be added to counts
after it. The run id is a hash of exactly that configuration; the event log keeps each
run's counters under its own keys and registers every run it has seen, so the report
covers the current run and still lists the earlier ones.

This module must not import FastAPI or anything from ``training``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import orjson

__all__ = ["run_config", "run_id"]


def run_config(salt: str, arms: Iterable[tuple[str, float, str]]) -> dict[str, Any]:
    """What defines a run: the salt and each arm's name, weight and ranker, in order."""
    return {
        "salt": salt,
        "arms": [{"name": n, "weight": float(w), "ranker": r} for n, w, r in arms],
    }


def run_id(config: dict[str, Any]) -> str:
    """12 hex digits of the SHA-256 of the canonical JSON of ``config``."""
    canonical = orjson.dumps(config, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()[:12]
