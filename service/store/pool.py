"""The connection pool of the request path: a full pool is a queue, not an outage.

redis-py's default pool raises at once when all its connections are in use, and that
error looks like any connection failure: the store took it for Redis being down and
skipped Redis for ``redis_retry_s``, so above 256 concurrent requests a healthy Redis lost
exposures and refused events. This pool makes a request wait (bounded) for a connection
and, if none frees up in time, raises :class:`PoolExhausted`, which is not a Redis error
and never opens the circuit breaker.

A Redis Cluster client (:func:`cluster_client`) keeps one pool per master, and a full one
raises at once (``MaxConnectionsError``, a ``ConnectionError``: a cluster pipeline that
meets it retries after closing every connection; under a burst the tests saw 500s);
:class:`ConnectionBudget` gives it the same bounded wait instead, before a call is sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from redis.asyncio import BlockingConnectionPool
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError


class PoolExhausted(Exception):
    """No pooled connection became free within the pool timeout (load, not failure)."""


class WaitingPool(BlockingConnectionPool):
    """``BlockingConnectionPool`` whose wait timeout raises :class:`PoolExhausted`."""

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().get_connection(*args, **kwargs)
        except RedisConnectionError as error:
            if isinstance(error.__cause__, asyncio.TimeoutError):
                raise PoolExhausted(
                    f"all {self.max_connections} Redis connections busy for {self.timeout} s"
                ) from None
            raise


def request_pool(
    url: str,
    *,
    max_connections: int,
    wait_s: float,
    timeout_s: float,
    on_connect: Callable[[], None] | None = None,
) -> WaitingPool:
    """The pool for ``url``: short socket timeouts, and one retry on a fresh connection
    (after a Redis restart every pooled connection is stale; the retry reconnects instead
    of failing the request and opening the breaker). ``on_connect`` is told of every
    (re)connection: the server behind the URL may have changed."""

    async def connected(connection: Any) -> None:
        await connection.on_connect()
        if on_connect is not None:
            on_connect()

    return WaitingPool.from_url(
        url,
        max_connections=max_connections,
        timeout=wait_s,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        health_check_interval=0,
        retry=Retry(NoBackoff(), 1),
        redis_connect_func=connected,
    )


CLUSTER_RETRIES = 2
"""Retries of a cluster call that met a refused connection or CLUSTERDOWN, each after the
client has refreshed its slot map (a failover moves a master): few and quick, so that a
master that is down fails the request within about a second, not after redis-py's default
backoff."""


def cluster_client(url: str, *, max_connections: int, timeout_s: float) -> RedisCluster:
    """redis-py's cluster client for ``url``, any node of the cluster (it discovers the
    others): the request path's short socket timeouts, ``max_connections`` per master."""
    return RedisCluster.from_url(
        url,
        max_connections=max_connections,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        health_check_interval=0,
        retry=Retry(ExponentialBackoff(cap=0.25, base=0.05), CLUSTER_RETRIES),
    )


class ConnectionBudget:
    """At most ``max_connections`` calls in flight; the next waits up to ``wait_s`` for
    one to finish, then gets :class:`PoolExhausted`. A call holds at most one connection
    per master (a pipeline spanning masters, one on each), so no master's pool of
    ``max_connections`` ever runs out."""

    def __init__(self, max_connections: int, wait_s: float) -> None:
        self.max_connections = max_connections
        self.wait_s = wait_s
        self._free = asyncio.Semaphore(max_connections)

    @asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        try:
            async with asyncio.timeout(self.wait_s):
                await self._free.acquire()
        except TimeoutError:
            raise PoolExhausted(
                f"all {self.max_connections} Redis connections busy for {self.wait_s} s"
            ) from None
        try:
            yield
        finally:
            self._free.release()
