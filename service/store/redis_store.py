"""Async Redis access for the request path: the feature store and the profile cache.

Redis is a dependency that may fail; the service must not. Every call has a short socket
timeout, and after a failure Redis is skipped for ``retry_s`` (a request does not wait on
a dead server each time), then tried again: the service recovers by itself when Redis
returns. Callers see :class:`StoreUnavailable` and degrade (compute without caching).

Load is not failure: when every pooled connection is busy a request waits for one
(bounded, :mod:`service.store.pool`); if the wait runs out it gets :class:`StoreBusy`,
which callers treat like unavailability, but the breaker stays closed. A reply that
does not come within the socket timeout is not proof of an outage either: on a saturated
event loop a reply can sit unread for longer than the timeout. Only
:data:`SLOW_CALLS_TO_OPEN` timeouts in a row (no call succeeding in between) open the
breaker; a refused or broken connection opens it at once.

What Redis served recently is kept in memory (:mod:`service.store.memory`): feature
records and profiles, so known users still get their own profiles while Redis is down.

The server's persistence (:mod:`service.store.durability`) is probed at start-up, again
after every (re)connection (Redis may come back as another server, or configured
differently) and by ``/readyz``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from service.store.durability import Persistence, probe
from service.store.keys import Keys
from service.store.memory import LRU, ProfileMemory
from service.store.pool import PoolExhausted, request_pool

T = TypeVar("T")

SLOW_CALLS_TO_OPEN = 3
"""Consecutive timed-out calls that open the breaker (a hung Redis, not a busy loop)."""


class StoreUnavailable(Exception):
    """Redis could not be reached (or is being skipped after a recent failure)."""


class StoreBusy(StoreUnavailable):
    """Every pooled connection stayed busy for the pool timeout: Redis is up but the
    service is over its connection budget (not counted as an outage)."""


class FeatureCache(LRU[str, dict[str, Any]]):
    """Bounded LRU of users' feature records (the fallback during Redis outages); a
    ``cachetools.LRUCache`` (:class:`~service.store.memory.LRU`), with size 0 meaning no
    cache at all."""


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
        profile_memory_size: int = 10_000,
        max_connections: int = 256,
        pool_timeout_s: float = 5.0,
    ) -> None:
        self.url = url
        self.keys = keys
        self.retry_s = retry_s
        pool = request_pool(
            url,
            max_connections=max_connections,
            wait_s=pool_timeout_s,
            timeout_s=timeout_s,
            on_connect=self._connected,
        )
        self.client = aioredis.Redis.from_pool(pool)  # the client closes the pool
        self.features_lru = FeatureCache(feature_cache_size)
        self.profile_memory = ProfileMemory(profile_memory_size)
        self._down_until = 0.0
        self.up = True
        self.on_state: Callable[[bool], None] | None = None
        self.on_error: Callable[[str], None] | None = None  # busy | timeout | refused | down
        self._timeouts = 0
        self.persistence: Persistence | None = None  # None: not known yet
        self.on_persistence: Callable[[Persistence], None] | None = None
        self._probing: asyncio.Task[Persistence | None] | None = None

    async def call(self, operation: Callable[[], Awaitable[T]]) -> T:
        if not self.up and time.monotonic() < self._down_until:
            raise StoreUnavailable(f"Redis at {self.url} is down")
        try:
            result = await operation()
        except PoolExhausted as error:  # load, not an outage: the breaker stays closed
            self._count("busy")
            raise StoreBusy(f"Redis at {self.url}: {error}") from error
        except ResponseError as error:  # Redis answered (OOM, READONLY...): not an outage
            self._count("refused")
            raise StoreUnavailable(f"Redis at {self.url} refused: {error}") from error
        except (TimeoutError, RedisTimeoutError) as error:
            self._count("timeout")
            self._timeouts += 1
            if self._timeouts >= SLOW_CALLS_TO_OPEN:
                self._open()
            raise StoreUnavailable(f"Redis at {self.url} timed out: {error}") from error
        except (RedisError, OSError) as error:
            self._count("down")
            self._open()
            raise StoreUnavailable(f"Redis at {self.url}: {error}") from error
        self._timeouts = 0
        if not self.up:
            self._set_up(True)
        return result

    def _count(self, kind: str) -> None:
        if self.on_error is not None:
            self.on_error(kind)

    def _open(self) -> None:
        """Skip Redis for ``retry_s``."""
        self._set_up(False)
        self._down_until = time.monotonic() + self.retry_s

    def _set_up(self, up: bool) -> None:
        self.up = up
        if self.on_state is not None:
            self.on_state(up)

    def _connected(self) -> None:
        """A connection was (re)made: maybe to another server, or the same one
        reconfigured; probe its persistence again (one probe at a time)."""
        if self._probing is None or self._probing.done():
            self._probing = asyncio.get_running_loop().create_task(self.refresh_persistence())

    async def current_persistence(self) -> Persistence | None:
        """The persistence, once a probe already under way has finished."""
        probing = self._probing
        if probing is not None and not probing.done():
            await asyncio.shield(probing)
        return self.persistence

    async def refresh_persistence(self) -> Persistence | None:
        """Probe the server's persistence; the last known one while Redis is down."""
        try:
            found = await self.call(lambda: probe(self.client))
        except StoreUnavailable:
            return self.persistence
        if found != self.persistence:
            self.persistence = found
            if self.on_persistence is not None:
                self.on_persistence(found)
        return found

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
        """The user's stored record (None: unknown); raises :class:`StoreUnavailable`
        (the caller may fall back on :meth:`remembered_features`)."""
        fields = await self.call(lambda: self.client.hgetall(self.keys.features(user_id)))
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
        self.profile_memory.drop(user_id)

    def remembered_features(self, user_id: str) -> dict[str, Any] | None:
        """The record last read or written for the user by this process, if still kept."""
        return self.features_lru.get(user_id)

    async def close(self) -> None:
        await self.client.aclose()
