"""The floor for a cached ``GET /users/{user_id}/tags``: FastAPI plus one Redis GET.

``bench_service.py`` runs this app under uvicorn with the same flags as the service and
compares the two on the same cached profile keys, so the ratio shows what the service adds
on top of the framework and the Redis round trip (validation, metrics, the response
encoding). It returns the cached bytes as they are: no parsing, no k, no metrics.

Configuration (environment variables, set by the benchmark):

- ``BARE_REDIS_URL``: the Redis to read, loopback only (``redis://127.0.0.1:PORT/0``);
- ``BARE_KEY_TEMPLATE``: the key to GET, ``{user_id}`` replaced by the path's user id
  (the service's profile key, ``<prefix>profile:<model_version>:{user_id}``).

    BARE_REDIS_URL=redis://127.0.0.1:6379/0 BARE_KEY_TEMPLATE='tp:profile:v1:{user_id}' \\
        .venv/bin/python -m uvicorn --app-dir benchmarks bare_redis_app:app --port 8001
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

REDIS_URL = os.environ.get("BARE_REDIS_URL", "redis://127.0.0.1:6379/0")
KEY_TEMPLATE = os.environ.get("BARE_KEY_TEMPLATE", "tp:profile:{user_id}")


def _loopback_url(url: str) -> str:
    """The URL if its host is a loopback address; a benchmark must not reach out.
    (bench_service.require_loopback does the same; importing it would load numpy and
    onnxruntime into this baseline and inflate its garbage collections.)"""
    host = urlsplit(url).hostname or ""
    loopback = host == "localhost"
    if not loopback:
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
    if not loopback:
        raise ValueError(f"BARE_REDIS_URL must point at a loopback address, not {host!r}")
    return url


# The same client options as service.store.redis_store.RedisStore, so both pay the same Redis cost.
client = aioredis.Redis.from_url(
    _loopback_url(REDIS_URL),
    socket_timeout=0.5,
    socket_connect_timeout=0.5,
    health_check_interval=0,
    max_connections=256,
)


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    try:
        yield
    finally:
        await client.aclose()


app = FastAPI(title="bare redis GET", lifespan=lifespan)


@app.get("/users/{user_id}/tags")
async def user_tags(user_id: str) -> Response:
    """One Redis GET of the profile key; its bytes are the body (404 when absent)."""
    blob = await client.get(KEY_TEMPLATE.replace("{user_id}", user_id))
    if blob is None:
        return Response(b'{"detail":"not cached"}', status_code=404, media_type="application/json")
    return Response(blob, media_type="application/json")


@app.get("/readyz")
async def readyz() -> JSONResponse:
    """200 once Redis answers, like the service's readiness check."""
    up = bool(await client.ping())
    return JSONResponse({"status": "ready" if up else "not ready"}, status_code=200 if up else 503)
