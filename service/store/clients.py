"""Synchronous Redis clients of the offline jobs (``load``, ``precompute``): one factory,
so a standalone server and a Redis Cluster are a setting apart."""

from __future__ import annotations

import redis
from redis.cluster import RedisCluster

SyncClient = redis.Redis | RedisCluster


def sync_client(url: str, *, cluster: bool = False, **options: object) -> SyncClient:
    """A client for ``url``; with ``cluster`` redis-py's cluster client, which discovers
    the other nodes from this one and routes every key to the master of its slot."""
    if cluster:
        return RedisCluster.from_url(url, **options)
    return redis.Redis.from_url(url, **options)
