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

With ``cluster=True`` the URL is one node of a Redis Cluster and the client is redis-py's
cluster client, which routes every key to the master of its slot and follows failovers
(the key layout keeps each multi-key operation in one slot: :mod:`service.store.keys`).
The breaker is one for the whole cluster: a master that refuses connections opens it
like a standalone server would (the cluster client has already retried on a refreshed
slot map by then). Its pools raise when full, so a :class:`~.pool.ConnectionBudget`
queues the calls instead. It has no connect hook: persistence is probed again when the
breaker closes and when the set of masters changes (checked at most once a second), and
it is the weakest of all masters.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import MaxConnectionsError, RedisClusterException, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from service.store.durability import Persistence, probe, probe_cluster
from service.store.keys import Keys
from service.store.memory import LRU, ProfileMemory
from service.store.pool import ConnectionBudget, PoolExhausted, cluster_client, request_pool

T = TypeVar("T")

SLOW_CALLS_TO_OPEN = 3
"""Consecutive timed-out calls that open the breaker (a hung Redis, not a busy loop)."""
TOPOLOGY_CHECK_S = 1.0
"""A cluster's set of masters is compared at most this often (a failover changes it)."""


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
        cluster: bool = False,
    ) -> None:
        self.url = url
        self.keys = keys
        self.retry_s = retry_s
        self.cluster = cluster
        self.client: aioredis.Redis | RedisCluster
        self._budget: ConnectionBudget | None = None
        if cluster:
            self.client = cluster_client(url, max_connections=max_connections, timeout_s=timeout_s)
            self._budget = ConnectionBudget(max_connections, pool_timeout_s)
        else:
            pool = request_pool(
                url,
                max_connections=max_connections,
                wait_s=pool_timeout_s,
                timeout_s=timeout_s,
                on_connect=self._connected,
            )
            self.client = aioredis.Redis.from_pool(pool)  # the client closes the pool
        self._masters: frozenset[str] = frozenset()
        self._masters_checked = 0.0
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
            if self._budget is None:
                result = await operation()
            else:
                async with self._budget.held():
                    result = await operation()
        except (PoolExhausted, MaxConnectionsError) as error:  # load, not an outage
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
        except (RedisError, OSError, RedisClusterException) as error:
            self._count("down")
            self._open()
            raise StoreUnavailable(f"Redis at {self.url}: {error}") from error
        self._timeouts = 0
        if not self.up:
            self._set_up(True)
            if self.cluster:
                self._connected()  # back after an outage: maybe reconfigured
        if self.cluster:
            self._check_masters()
        return result

    def _check_masters(self) -> None:
        """Probe persistence again when a cluster's masters changed (a failover)."""
        now = time.monotonic()
        if now - self._masters_checked < TOPOLOGY_CHECK_S:
            return
        self._masters_checked = now
        assert isinstance(self.client, RedisCluster)
        masters = frozenset(node.name for node in self.client.get_primaries())
        if masters != self._masters:
            self._masters = masters
            self._connected()

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
            client = self.client
            found = await self.call(
                (lambda: probe_cluster(client))
                if isinstance(client, RedisCluster)
                else (lambda: probe(client))
            )
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
        client = self.client
        try:
            if isinstance(client, RedisCluster):  # every master answers
                await self.call(lambda: client.ping(target_nodes=RedisCluster.PRIMARIES))
            else:
                await self.call(client.ping)
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
