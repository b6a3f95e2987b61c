"""The profile scoring path of a request: a cache hit is one Redis GET passed through as
bytes; a miss reads the user's features, scores them in a micro-batch with other misses
and caches the top ``max_k`` for the next request.

Redis failing never fails a request, and the answer says what it is (``source``):

- ``model``: the user's profile, cached in Redis or computed from the stored features;
- ``popular``: the model's cold-start tags for a user without usable features;
- ``memory``: Redis is unreachable; the user's own profile, from this process's copy of
  the profile it last served them or of their features;
- ``fallback``: Redis is unreachable and this process has nothing for the user: the
  cold-start tags, though the user may well be known.
"""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass, replace

import numpy as np

from service.metrics import ServiceMetrics
from service.model.loaded import LoadedModel
from service.model.profiles import ProfileFormatError
from service.model.serving import Serving
from service.store import RedisStore, StoreUnavailable

Scored = tuple[np.ndarray, bytes]
"""A user's all-tag scores and their response-ready top-``max_k`` profile."""


@dataclass(frozen=True)
class Profiles:
    """Users' profiles from one model: the model and its batcher, Redis (features and
    cache), the metrics and a cached profile's lifetime. A reload swaps the whole value."""

    serving: Serving
    store: RedisStore
    metrics: ServiceMetrics
    ttl_s: int
    jitter: float

    @property
    def model(self) -> LoadedModel:
        return self.serving.model

    def using(self, serving: Serving) -> Profiles:
        """The same path on another model (an A/B arm with its own bundle)."""
        return replace(self, serving=serving)

    async def scores(self, user_id: str) -> tuple[Scored | None, str]:
        """``(scored, source)`` for a user with usable features (``model``, or ``memory``
        while Redis is down), else ``(None, "popular" | "fallback")``: the caller uses
        the cold-start scores."""
        source = "model"
        try:
            record = await self.store.get_features(user_id)
        except StoreUnavailable:
            record = self.store.remembered_features(user_id)
            source = "memory" if record is not None else "fallback"
        if record is None or not self.model.spec.fits(record):
            return None, "popular" if source == "model" else "fallback"
        return await self.serving.batcher.submit(record), source

    async def response(self, user_id: str, k: int) -> bytes:
        """The ``GET /users/{user_id}/tags`` body with the user's top ``k`` tags."""
        model, metrics, memory = self.model, self.metrics, self.store.profile_memory
        try:
            blob = await self.store.get_profile(model.version, user_id)
        except StoreUnavailable:
            metrics.cache_error.inc()
            return await self.without_redis(user_id, k)
        if blob is not None:
            try:
                body = model.codec.response(user_id, blob, k, cached=True, source="model")
            except ProfileFormatError:
                pass  # not ours: recompute and overwrite
            else:
                metrics.cache_hit.inc()
                memory.put(model.version, user_id, blob)
                return body
        metrics.cache_miss.inc()
        scored, source = await self.scores(user_id)
        metrics.profile_source.labels(source).inc()
        if scored is None:
            blob = model.cold_start_blob
            return model.codec.response(user_id, blob, k, cached=False, source=source)
        blob = scored[1]
        if source == "model":
            memory.put(model.version, user_id, blob)
            with suppress(StoreUnavailable):
                await self.store.set_profile(model.version, user_id, blob, self.ttl_s, self.jitter)
        return model.codec.response(user_id, blob, k, cached=False, source=source)

    async def without_redis(self, user_id: str, k: int) -> bytes:
        """Redis is unreachable: the profile this process last served the user, else one
        computed from their remembered features, else the cold-start tags."""
        model = self.model
        blob = self.store.profile_memory.get(model.version, user_id)
        if blob is not None:
            self.metrics.profile_source.labels("memory").inc()
            return model.codec.response(user_id, blob, k, cached=False, source="memory")
        scored, source = await self.scores(user_id)
        self.metrics.profile_source.labels(source).inc()
        blob = model.cold_start_blob if scored is None else scored[1]
        return model.codec.response(user_id, blob, k, cached=False, source=source)
