"""``serve --workers N``: N uvicorn worker processes on one port, sharing what must be shared.

What each process keeps for itself stays per process (the model, its micro-batcher, the
in-memory fallbacks). What must be one for all is set up here, in the supervising process,
before the workers start:

- the embedded Redis, when no URL is configured: started once; each worker finds it through
  its marker file (:mod:`service.store.connection`), as ``load`` and ``precompute`` do;
- Prometheus multiprocess mode: a fresh ``PROMETHEUS_MULTIPROC_DIR``, so ``/metrics`` on any
  worker reports all of them (:mod:`service.metrics`);
- the serving record (:mod:`service.reload_sync`): the configured bundle, so a reload on one
  worker reaches the others and a record left by an earlier run is not followed;
- the settings: the flags' values are exported as ``TAGPROFILE_*`` variables, since every
  worker builds its app from the environment.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from service.envvars import env_name
from service.http import run_workers
from service.metrics import MULTIPROCESS_DIR
from service.reload_sync import serving_record
from service.settings import Settings
from service.store import Keys, redis_endpoint, sync_client


def export_settings(overrides: Mapping[str, Any]) -> None:
    """Put settings given as flags where the worker processes read theirs."""
    for field, value in overrides.items():
        os.environ[env_name(field)] = str(value)


@contextmanager
def metrics_directory() -> Iterator[Path]:
    """``PROMETHEUS_MULTIPROC_DIR`` for this run: the operator's (emptied of an earlier
    run's files, as prometheus_client requires) or a temporary one, removed afterwards."""
    configured = os.environ.get(MULTIPROCESS_DIR)
    if configured:
        folder = Path(configured)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.db"):
            stale.unlink()
        yield folder
        return
    folder = Path(tempfile.mkdtemp(prefix="tagprofile-metrics-"))
    os.environ[MULTIPROCESS_DIR] = str(folder)
    try:
        yield folder
    finally:
        del os.environ[MULTIPROCESS_DIR]
        shutil.rmtree(folder, ignore_errors=True)


def serve_workers(settings: Settings, model_version: str, overrides: Mapping[str, Any]) -> None:
    """Run ``settings.workers`` workers until interrupted (see the module docstring)."""
    export_settings(overrides)
    with redis_endpoint(settings.redis_url, settings.redis_data_dir) as endpoint:
        if settings.reload_sync_s > 0:
            client = sync_client(endpoint.url, cluster=settings.redis_cluster)
            try:
                record = serving_record(settings.bundle, model_version)
                client.set(Keys(settings.key_prefix).serving, record)
            finally:
                client.close()
        with metrics_directory():
            run_workers(settings)
