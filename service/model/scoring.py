"""The profile scoring path of a request: a cache hit is one Redis GET passed through as
bytes; a miss reads the user's features, scores them in a micro-batch with other misses
and caches the top ``max_k`` for the next request.

Redis failing never fails a request: without Redis the profile is computed (features from
the store's in-memory LRU, else the cold-start tags) and answered uncached.
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
        """``(scored, "model")`` for a user with usable features, else
        ``(None, "popular")``: the caller falls back to the cold-start scores."""
        try:
            record = await self.store.get_features(user_id)
        except StoreUnavailable:
            record = None
        if record is None or not self.model.spec.fits(record):
            return None, "popular"
        return await self.serving.batcher.submit(record), "model"

    async def response(self, user_id: str, k: int) -> bytes:
        """The ``GET /users/{user_id}/tags`` body with the user's top ``k`` tags."""
        model, metrics = self.model, self.metrics
        cacheable = True
        try:
            blob = await self.store.get_profile(model.version, user_id)
        except StoreUnavailable:
            blob, cacheable = None, False
            metrics.cache_error.inc()
        if blob is not None:
            try:
                body = model.codec.response(user_id, blob, k, cached=True, source="model")
            except ProfileFormatError:
                pass  # not ours: recompute and overwrite
            else:
                metrics.cache_hit.inc()
                return body
        if cacheable:
            metrics.cache_miss.inc()
        scored, source = await self.scores(user_id)
        metrics.profile_source.labels(source).inc()
        if scored is None:
            blob = model.cold_start_blob
            return model.codec.response(user_id, blob, k, cached=False, source=source)
        blob = scored[1]
        if cacheable:
            with suppress(StoreUnavailable):
                await self.store.set_profile(model.version, user_id, blob, self.ttl_s, self.jitter)
        return model.codec.response(user_id, blob, k, cached=False, source=source)
