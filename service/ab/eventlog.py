"""A/B logging in Redis: exposures when a ranking is served, clicks and impressions posted
to ``/events``, and the per-user counters the report is computed from.

Everything lives in Redis (not in the API process), so several API replicas share one
experiment. Keys, under ``{prefix}ab:``:

- ``req:{request_id}`` hash: experiment, arm, user, shown theme ids (JSON); a TTL bounds
  how late an event may arrive;
- ``{experiment}:exposures`` / ``{experiment}:events`` streams: the raw log;
- ``{experiment}:imps:{arm}`` / ``{experiment}:clicks:{arm}`` hashes: user -> count;
- ``{experiment}:pos:{arm}`` hash: ``imp:{p}``, ``click:{p}``, ``view:{p}`` per position;
- ``{experiment}:ts:{arm}`` hash: ``{minute}:imp`` / ``{minute}:click`` for the time plot;
- ``{experiment}:seg-imps:{arm}`` / ``{experiment}:seg-clicks:{arm}`` hashes:
  ``{segment}|{user}`` -> count, for rankings requested with a segment (the report's
  per-segment breakdown; ``|`` is in neither a segment name nor a user id);
- ``event:{event_id}``: seen event ids (idempotency).

An exposure is written in one MULTI transaction; an event by one Lua script that checks
the event id, then counts at most one click per (request, theme), all or nothing.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson
import redis.asyncio as aioredis

STREAM_MAXLEN = 1_000_000
REQUEST_TTL_S = 7 * 24 * 3600

_RECORD_EVENT = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[7]) then return 0 end
local field = (ARGV[2] == 'click') and 'click:' or 'view:'
if redis.call('HSETNX', KEYS[2], field .. ARGV[3], '1') == 0 then return 2 end
if ARGV[2] == 'click' then
  redis.call('HINCRBY', KEYS[3], ARGV[5], 1)
  redis.call('HINCRBY', KEYS[5], ARGV[6] .. ':click', 1)
  if ARGV[10] ~= '' then redis.call('HINCRBY', KEYS[7], ARGV[10], 1) end
end
redis.call('HINCRBY', KEYS[4], field .. ARGV[4], 1)
redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[9], '*', 'event_id', ARGV[1],
  'request_id', ARGV[8], 'type', ARGV[2], 'theme_id', ARGV[3], 'user', ARGV[5])
return 1
"""
ACCEPTED, DUPLICATE_EVENT, ALREADY_COUNTED = 1, 0, 2


@dataclass(frozen=True)
class Exposure:
    """What one served ranking showed: looked up when its events arrive."""

    experiment: str
    arm: str
    user_id: str
    theme_ids: tuple[str, ...]
    segment: str | None = None
    """The request's scenario or user segment (declared by the experiment), if any."""

    @property
    def segment_field(self) -> str:
        """The field of this user in the segment hashes; empty without a segment."""
        return "" if self.segment is None else f"{self.segment}|{self.user_id}"


@dataclass(frozen=True)
class ArmCounts:
    """Raw counters of one arm, as the report needs them."""

    impressions: dict[str, int]  # user -> impressions
    clicks: dict[str, int]  # user -> clicks
    positions: dict[str, int]  # "imp:3" -> count
    timeline: dict[str, int]  # "29123456:click" -> count
    segment_impressions: dict[str, int] = field(default_factory=dict)  # "home|u1" -> count
    segment_clicks: dict[str, int] = field(default_factory=dict)


class ABStore:
    """Exposure and event logging for all experiments under one key prefix."""

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = f"{prefix}ab:"
        self._record_event = client.register_script(_RECORD_EVENT)

    def _key(self, experiment: str, name: str) -> str:
        return f"{self.prefix}{experiment}:{name}"

    def _request_key(self, request_id: str) -> str:
        return f"{self.prefix}req:{request_id}"

    async def log_exposure(
        self, request_id: str, exposure: Exposure, now: float | None = None
    ) -> None:
        """Record a served ranking: raises on any Redis failure (nothing half-written)."""
        minute = int((now or time.time()) // 60)
        exp, arm, user = exposure.experiment, exposure.arm, exposure.user_id
        themes = orjson.dumps(list(exposure.theme_ids))
        n = len(exposure.theme_ids)
        async with self.client.pipeline(transaction=True) as pipe:
            request_key = self._request_key(request_id)
            request = {"experiment": exp, "arm": arm, "user": user, "themes": themes}
            if exposure.segment is not None:
                request["segment"] = exposure.segment
                pipe.hincrby(self._key(exp, f"seg-imps:{arm}"), exposure.segment_field, n)
            pipe.hset(request_key, mapping=request)
            pipe.expire(request_key, REQUEST_TTL_S)
            pipe.xadd(
                self._key(exp, "exposures"),
                {"request_id": request_id, "user": user, "arm": arm, "themes": themes},
                maxlen=STREAM_MAXLEN,
                approximate=True,
            )
            pipe.hincrby(self._key(exp, f"imps:{arm}"), user, n)
            for position in range(n):
                pipe.hincrby(self._key(exp, f"pos:{arm}"), f"imp:{position}", 1)
            pipe.hincrby(self._key(exp, f"ts:{arm}"), f"{minute}:imp", n)
            await pipe.execute()

    async def exposure(self, request_id: str) -> Exposure | None:
        fields = await self.client.hgetall(self._request_key(request_id))
        if not fields:
            return None
        return Exposure(
            experiment=fields[b"experiment"].decode(),
            arm=fields[b"arm"].decode(),
            user_id=fields[b"user"].decode(),
            theme_ids=tuple(orjson.loads(fields[b"themes"])),
            segment=fields[b"segment"].decode() if b"segment" in fields else None,
        )

    async def record_event(
        self,
        event_id: str,
        request_id: str,
        kind: str,
        exposure: Exposure,
        position: int,
        now: float | None = None,
    ) -> int:
        """ACCEPTED, DUPLICATE_EVENT (event id seen before) or ALREADY_COUNTED (a second
        click on the same theme of the same request: logged once, counted once)."""
        minute = int((now or time.time()) // 60)
        exp, arm = exposure.experiment, exposure.arm
        keys = [
            f"{self.prefix}event:{event_id}",
            self._request_key(request_id),
            self._key(exp, f"clicks:{arm}"),
            self._key(exp, f"pos:{arm}"),
            self._key(exp, f"ts:{arm}"),
            self._key(exp, "events"),
            self._key(exp, f"seg-clicks:{arm}"),
        ]
        args = [
            event_id,
            kind,
            exposure.theme_ids[position],
            position,
            exposure.user_id,
            minute,
            REQUEST_TTL_S,
            request_id,
            STREAM_MAXLEN,
            exposure.segment_field,
        ]
        return int(await self._record_event(keys=keys, args=args))

    async def counts(self, experiment: str, arms: Sequence[str]) -> dict[str, ArmCounts]:
        """Every arm's counters, read in one pipelined round trip."""
        names = ("imps", "clicks", "pos", "ts", "seg-imps", "seg-clicks")
        async with self.client.pipeline(transaction=False) as pipe:
            for arm in arms:
                for name in names:
                    pipe.hgetall(self._key(experiment, f"{name}:{arm}"))
            replies = await pipe.execute()

        def ints(fields: dict[bytes, bytes]) -> dict[str, int]:
            return {key.decode(): int(value) for key, value in fields.items()}

        width = len(names)
        return {
            arm: ArmCounts(*(ints(replies[width * i + j]) for j in range(width)))
            for i, arm in enumerate(arms)
        }
