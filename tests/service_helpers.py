"""Helpers of the service tests: settings with an isolated key prefix, the app running
through its real lifespan, and model scores computed independently of the service code
(onnxruntime fed by hand from ``users.jsonl``)."""

from __future__ import annotations

import json
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import uvicorn
from fastapi.testclient import TestClient

from service.app import create_app
from service.http import server_config
from service.jobs.load import load_into_redis
from service.model.bundle import MANIFEST_NAME
from service.settings import Settings
from service.store import sync_client
from service.store.keys import Keys

ADMIN = {"authorization": "Bearer test-admin-token"}

EXPERIMENTS = """
experiments:
  - name: themes
    salt: test-salt
    control: popular
    popular_by: ctr
    arms:
      - {name: popular, weight: 1, ranker: popular}
      - {name: profile, weight: 1, ranker: profile}
"""


def write_experiments(path: Path, text: str = EXPERIMENTS) -> Path:
    path.write_text(text)
    return path


def make_settings(bundle: Path, redis_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "bundle": bundle,
        "redis_url": redis_url,
        "key_prefix": f"t{uuid.uuid4().hex[:8]}:",
        "admin_token": "test-admin-token",
        "batch_wait_ms": 1.0,
        "intra_op_threads": 1,
    }
    return Settings(**{**values, **overrides})


@contextmanager
def client_for(settings: Settings, *, load_users: bool = True) -> Iterator[TestClient]:
    """The app with its lifespan run, after loading the bundle's users into Redis."""
    if load_users:
        load_users_into(settings)
    with TestClient(create_app(settings)) as client:
        yield client


@contextmanager
def served(settings: Settings, *, load_users: bool = True) -> Iterator[str]:
    """The app under real uvicorn (the service's own server configuration) on loopback, in
    a thread of this process; yields its base URL.

    Port 0: the kernel picks a free port at bind time, so parallel test workers never
    collide. The lifespan runs as in ``serve``.
    """
    if load_users:
        load_users_into(settings)
    app = create_app(settings)
    config = server_config(app, settings, host="127.0.0.1", port=0, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def load_users_into(settings: Settings) -> None:
    from service.model.bundle import load_bundle

    assert settings.redis_url is not None
    client = sync_client(settings.redis_url, cluster=settings.redis_cluster)
    load_into_redis(load_bundle(settings.bundle), client, Keys(settings.key_prefix), progress=False)


def users(bundle: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (bundle / "users.jsonl").read_text().splitlines()]


def reference_scores(bundle: Path, features: dict[str, list]) -> np.ndarray:
    """All-tag scores of one user, fed to onnxruntime by hand (no service code)."""
    session = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    feeds = {}
    for spec in session.get_inputs():
        if spec.name == "attributes":  # one value per attribute, 0 = unknown
            values = features.get(spec.name, [0] * spec.shape[1])
            feeds[spec.name] = np.asarray([values], dtype=np.int64)
            continue
        values = features.get(spec.name, [])
        dtype = np.float32 if spec.type == "tensor(float)" else np.int64
        row = np.zeros((1, max(1, len(values))), dtype=dtype)
        row[0, : len(values)] = values
        feeds[spec.name] = row
    return session.run(["scores"], feeds)[0][0]


def copy_with_version(bundle: Path, target: Path, version: str) -> Path:
    """A copy of ``bundle`` announcing another model version (same weights)."""
    shutil.copytree(bundle, target)
    manifest = json.loads((target / MANIFEST_NAME).read_text())
    manifest["model_version"] = version
    (target / MANIFEST_NAME).write_text(json.dumps(manifest))
    return target


@contextmanager
def live_server(settings: Settings) -> Iterator[str]:
    """:func:`served` without loading the bundle's users (the caller has, or needs none)."""
    with served(settings, load_users=False) as base:
        yield base
