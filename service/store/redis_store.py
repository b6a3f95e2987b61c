"""Async Redis access for the request path: the feature store and the profile cache.

Redis is a dependency that may fail; the service must not. Every call has a short socket
timeout, and after a failure Redis is skipped for ``retry_s`` (a request does not wait on
a dead server each time), then tried again: the service recovers by itself when Redis
returns. Callers see :class:`StoreUnavailable` and degrade (compute without caching).
Features read successfully are also kept in a bounded in-memory LRU, so known users still
get model profiles while Redis is down.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson
import redis.asyncio as aioredis
from cachetools import LRUCache
from redis.exceptions import RedisError

from service.store.keys import Keys

T = TypeVar("T")


class StoreUnavailable(Exception):
    """Redis could not be reached (or is being skipped after a recent failure)."""


class FeatureCache:
    """Bounded LRU of users' feature records (the fallback during Redis outages); a
    ``cachetools.LRUCache``, with size 0 meaning no cache at all."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: LRUCache[str, dict[str, Any]] | None = LRUCache(size) if size > 0 else None

    def get(self, user_id: str) -> dict[str, Any] | None:
        return None if self._items is None else self._items.get(user_id)

    def put(self, user_id: str, record: dict[str, Any]) -> None:
        if self._items is not None:
            self._items[user_id] = record

    def drop(self, user_id: str) -> None:
        if self._items is not None:
            self._items.pop(user_id, None)

    def __len__(self) -> int:
        return 0 if self._items is None else len(self._items)


def decode_features(fields: dict[bytes, bytes]) -> dict[str, Any]:
    """A feature hash as read from Redis -> record (field name -> list)."""
    return {name.decode(): orjson.loads(value) for name, value in fields.items()}


def encode_features(record: dict[str, Any]) -> dict[str, bytes]:
    return {name: orjson.dumps(value) for name, value in record.items()}


class RedisStore:
    """Profiles and features in Redis, with a circuit breaker around every call."""

    def __init__(
        self,
        url: str,
        keys: Keys,
        *,
        timeout_s: float = 0.5,
        retry_s: float = 1.0,
        feature_cache_size: int = 100_000,
    ) -> None:
        self.url = url
        self.keys = keys
        self.retry_s = retry_s
        self.client = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            health_check_interval=0,
            max_connections=256,
        )
        self.features_lru = FeatureCache(feature_cache_size)
        self._down_until = 0.0
        self.up = True
        self.on_state: Callable[[bool], None] | None = None

    async def call(self, operation: Callable[[], Awaitable[T]]) -> T:
        if not self.up and time.monotonic() < self._down_until:
            raise StoreUnavailable(f"Redis at {self.url} is down")
        try:
            result = await operation()
        except (RedisError, OSError) as error:
            self._set_up(False)
            self._down_until = time.monotonic() + self.retry_s
            raise StoreUnavailable(f"Redis at {self.url}: {error}") from error
        if not self.up:
            self._set_up(True)
        return result

    def _set_up(self, up: bool) -> None:
        self.up = up
        if self.on_state is not None:
            self.on_state(up)

    async def ping(self) -> bool:
        """Reachability, for ``/readyz`` (always tries, ignoring the breaker)."""
        self._down_until = 0.0
        try:
            await self.call(self.client.ping)
        except StoreUnavailable:
            return False
        return True

    async def get_profile(self, model_version: str, user_id: str) -> bytes | None:
        return await self.call(lambda: self.client.get(self.keys.profile(model_version, user_id)))

    async def set_profile(
        self, model_version: str, user_id: str, blob: bytes, ttl_s: int, jitter: float
    ) -> None:
        ttl = ttl_s + int(random.random() * jitter * ttl_s)
        key = self.keys.profile(model_version, user_id)
        await self.call(lambda: self.client.set(key, blob, ex=ttl))

    async def drop_profile(self, model_version: str, user_id: str) -> None:
        await self.call(lambda: self.client.delete(self.keys.profile(model_version, user_id)))

    async def get_features(self, user_id: str) -> dict[str, Any] | None:
        """The user's stored record (None: unknown); from memory while Redis is down."""
        try:
            fields = await self.call(lambda: self.client.hgetall(self.keys.features(user_id)))
        except StoreUnavailable:
            record = self.features_lru.get(user_id)
            if record is None:
                raise
            return record
        if not fields:
            self.features_lru.drop(user_id)
            return None
        record = decode_features(fields)
        self.features_lru.put(user_id, record)
        return record

    async def put_features(self, user_id: str, record: dict[str, Any]) -> None:
        """Replace the user's record atomically (MULTI: delete + write)."""
        key = self.keys.features(user_id)

        async def write() -> None:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.delete(key)
                pipe.hset(key, mapping=encode_features(record))
                await pipe.execute()

        await self.call(write)
        self.features_lru.put(user_id, record)

    async def close(self) -> None:
        await self.client.aclose()
