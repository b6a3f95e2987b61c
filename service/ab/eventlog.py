"""A/B logging in Redis: exposures when a ranking is served, clicks and impressions posted
to ``/events``, and the per-user counters the report is computed from.

Everything lives in Redis (not in the API process), so several API replicas share one
experiment. Counters are kept per *run* (:mod:`service.ab.runs`: the experiment's salt
and arms), so a changed configuration starts from zero instead of adding to old counts.
The keys (:class:`~service.store.keys.ABKeys`), under ``{prefix}ab:``:

- ``req:{request_id}`` hash: experiment, run, arm, user, shown theme ids (JSON) and,
  for a ranking requested with a segment, the segment; what ``/events`` looks up;
- ``{{experiment}}:req:{request_id}`` hash: the exposure was counted (``themes``), and
  ``click:{theme}``/``view:{theme}`` once counted (one click per request and theme);
- ``{{experiment}}:runs`` hash: run id -> its configuration (JSON), every run seen;
- ``{{experiment}}:{run}:arms`` set: the arms that served exposures in the run;
- ``{{experiment}}:{run}:exposures`` / ``{{experiment}}:{run}:events`` streams: the raw log;
- ``{{experiment}}:{run}:imps:{arm}`` / ``{{experiment}}:{run}:clicks:{arm}`` hashes:
  user -> count;
- ``{{experiment}}:{run}:pos:{arm}`` hash: ``imp:{p}``, ``click:{p}``, ``view:{p}`` per
  position;
- ``{{experiment}}:{run}:ts:{arm}`` hash: ``{minute}:imp`` / ``{minute}:click`` for the
  time plot;
- ``{{experiment}}:{run}:seg-imps:{arm}`` / ``{{experiment}}:{run}:seg-clicks:{arm}``
  hashes: ``{segment}|{user}`` -> count, for rankings requested with a segment (the
  report's per-segment breakdown; ``|`` is in neither a segment name nor a user id);
- ``{{experiment}}:event:{event_id}``: the payload (request, type, theme) an event id was
  first used for: the same id with the same payload is a duplicate, with another payload a
  conflict (event ids are unique per experiment).

``{{experiment}}`` is the literal hash tag (braces included): on a Redis Cluster every key
a script touches is in the experiment's slot. Request ids are not tagged (they spread).

An exposure is written by one Lua script (all or nothing, once per request id, so a retry
after a lost reply counts it once), pipelined with the ``req:`` hash that ``/events`` reads;
an event by another script that checks the exposure was counted and the event id, then
counts at most one click per (request, theme). Both TTLs bound how late an event may
arrive. Where the server has WAITAOF (Redis 7.2+) an event's script is followed, on the same
connection, by ``WAITAOF 1 0 timeout``: the event is acknowledged only once it is in the
append-only file on disk (on a cluster: of the master of the experiment's slot).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import AskError, NoScriptError, SlotNotCoveredError, TryAgainError

from service.store import ABKeys

STREAM_MAXLEN = 1_000_000
REQUEST_TTL_S = 7 * 24 * 3600

_LOG_EXPOSURE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'themes', ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[8])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[10], '*', 'request_id', ARGV[9],
  'user', ARGV[4], 'arm', ARGV[3], 'themes', ARGV[5])
local n = tonumber(ARGV[6])
redis.call('HINCRBY', KEYS[3], ARGV[4], n)
for p = 0, n - 1 do redis.call('HINCRBY', KEYS[4], 'imp:' .. p, 1) end
redis.call('HINCRBY', KEYS[5], ARGV[7] .. ':imp', n)
redis.call('HSETNX', KEYS[6], ARGV[2], ARGV[11])
redis.call('SADD', KEYS[7], ARGV[3])
if ARGV[12] ~= '' then redis.call('HINCRBY', KEYS[8], ARGV[13], n) end
return 1
"""

_RECORD_EVENT = """
if redis.call('EXISTS', KEYS[2]) == 0 then return 4 end
local previous = redis.call('GET', KEYS[1])
if previous then
  if previous == ARGV[10] then return 0 end
  return 3
end
redis.call('SET', KEYS[1], ARGV[10], 'EX', ARGV[7])
local field = (ARGV[2] == 'click') and 'click:' or 'view:'
if redis.call('HSETNX', KEYS[2], field .. ARGV[3], '1') == 0 then return 2 end
if ARGV[2] == 'click' then
  redis.call('HINCRBY', KEYS[3], ARGV[5], 1)
  redis.call('HINCRBY', KEYS[5], ARGV[6] .. ':click', 1)
  if ARGV[11] ~= '' then redis.call('HINCRBY', KEYS[7], ARGV[11], 1) end
end
redis.call('HINCRBY', KEYS[4], field .. ARGV[4], 1)
redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[9], '*', 'event_id', ARGV[1],
  'request_id', ARGV[8], 'type', ARGV[2], 'theme_id', ARGV[3], 'user', ARGV[5])
return 1
"""
ACCEPTED, DUPLICATE_EVENT, ALREADY_COUNTED, CONFLICT, NOT_COUNTED = 1, 0, 2, 3, 4
"""Outcomes of an event; NOT_COUNTED: the request's exposure was never counted (its log
failed half-way) or has expired, so nothing of it may be counted."""

Client = aioredis.Redis | RedisCluster
"""Standalone Redis or a Redis Cluster: the log is the same on both."""


@dataclass(frozen=True)
class Recorded:
    """What became of an event: the outcome, and whether Redis confirmed it on disk
    (None where it was not asked: no WAITAOF, or waiting disabled)."""

    outcome: int
    on_disk: bool | None = None


@dataclass(frozen=True)
class Exposure:
    """What one served ranking showed: looked up when its events arrive."""

    experiment: str
    arm: str
    user_id: str
    theme_ids: tuple[str, ...]
    run: str = ""  # the experiment's run id ("": logged before runs existed)
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

    def __init__(self, client: Client, prefix: str) -> None:
        self.client = client
        self.keys = ABKeys(prefix)
        self.cluster = isinstance(client, RedisCluster)
        self._log_exposure = client.register_script(_LOG_EXPOSURE)
        self._record_event = client.register_script(_RECORD_EVENT)

    def _key(self, experiment: str, run: str, name: str) -> str:
        return self.keys.run(experiment, run, name)

    async def _pipelined(
        self, commands: Callable[[Any], None], script: AsyncScript, **options: Any
    ) -> list[Any]:
        """Replies of one non-transactional pipeline that runs ``script`` by its SHA (the
        errors as values). A server without the script (restarted, or a replica promoted
        since) answers NOSCRIPT and runs nothing of it: the script is loaded (on every
        master of a cluster) and the pipeline sent once more, its other commands being
        idempotent."""
        for attempt in (1, 2):
            async with self.client.pipeline(transaction=False) as pipe:
                commands(pipe)
                replies = await pipe.execute(raise_on_error=False, **options)
            if attempt == 1 and any(isinstance(r, NoScriptError) for r in replies):
                await self.client.script_load(script.script)
                continue
            break
        return replies

    async def log_exposure(
        self, request_id: str, exposure: Exposure, run_config: dict, now: float | None = None
    ) -> None:
        """Record a served ranking under its run: raises on any Redis failure (nothing
        half-written); a second call for the same request id changes nothing."""
        minute = int((now or time.time()) // 60)
        exp, run, arm, user = exposure.experiment, exposure.run, exposure.arm, exposure.user_id
        keys = [
            self.keys.counted(exp, request_id),
            self._key(exp, run, "exposures"),
            self._key(exp, run, f"imps:{arm}"),
            self._key(exp, run, f"pos:{arm}"),
            self._key(exp, run, f"ts:{arm}"),
            self.keys.runs(exp),
            self._key(exp, run, "arms"),
            self._key(exp, run, f"seg-imps:{arm}"),
        ]
        args = [
            exp,
            run,
            arm,
            user,
            orjson.dumps(list(exposure.theme_ids)),
            len(exposure.theme_ids),
            minute,
            REQUEST_TTL_S,
            request_id,
            STREAM_MAXLEN,
            orjson.dumps({**run_config, "first_seen": int(now or time.time())}),
            exposure.segment or "",
            exposure.segment_field,
        ]
        shown = {"experiment": exp, "run": run, "arm": arm, "user": user, "themes": args[4]}
        if exposure.segment is not None:
            shown["segment"] = exposure.segment
        request = self.keys.request(request_id)

        def commands(pipe: Any) -> None:
            # one round trip: on a cluster the two keys are on two masters, in parallel
            # execute_command: redis-py's ClusterPipeline blocks its evalsha() method
            pipe.execute_command("EVALSHA", self._log_exposure.sha, len(keys), *keys, *args)
            pipe.hset(request, mapping=shown)
            pipe.expire(request, REQUEST_TTL_S)

        for reply in await self._pipelined(commands, self._log_exposure):
            if isinstance(reply, Exception):
                raise reply

    async def exposure(self, request_id: str) -> Exposure | None:
        fields = await self.client.hgetall(self.keys.request(request_id))
        if not fields:
            return None
        return Exposure(
            experiment=fields[b"experiment"].decode(),
            arm=fields[b"arm"].decode(),
            user_id=fields[b"user"].decode(),
            theme_ids=tuple(orjson.loads(fields[b"themes"])),
            run=fields.get(b"run", b"").decode(),
            segment=fields[b"segment"].decode() if b"segment" in fields else None,
        )

    async def record_event(
        self,
        event_id: str,
        request_id: str,
        kind: str,
        exposure: Exposure,
        position: int,
        *,
        fsync_timeout_ms: int | None = None,
        now: float | None = None,
    ) -> Recorded:
        """ACCEPTED, DUPLICATE_EVENT (this event id, this payload, seen before), CONFLICT
        (this event id was used for another payload: nothing counted) or ALREADY_COUNTED
        (a second click on the same theme of the same request: logged once, counted
        once), or NOT_COUNTED (the request's exposure was not counted: nothing counted).
        With ``fsync_timeout_ms``, also whether the AOF confirmed it (WAITAOF)."""
        minute = int((now or time.time()) // 60)
        exp, run, arm = exposure.experiment, exposure.run, exposure.arm
        theme_id = exposure.theme_ids[position]
        keys = [
            self.keys.event(exp, event_id),
            self.keys.counted(exp, request_id),
            self._key(exp, run, f"clicks:{arm}"),
            self._key(exp, run, f"pos:{arm}"),
            self._key(exp, run, f"ts:{arm}"),
            self._key(exp, run, "events"),
            self._key(exp, run, f"seg-clicks:{arm}"),
        ]
        payload = orjson.dumps([request_id, kind, theme_id])
        args = [
            event_id,
            kind,
            theme_id,
            position,
            exposure.user_id,
            minute,
            REQUEST_TTL_S,
            request_id,
            STREAM_MAXLEN,
            payload,
            exposure.segment_field,
        ]
        if fsync_timeout_ms is None:
            return Recorded(int(await self._record_event(keys=keys, args=args)))
        # one connection for both: WAITAOF waits for this connection's last write
        node = None
        if isinstance(self.client, RedisCluster):  # (a no-op unless its map was dropped)
            node = (await self.client.initialize()).get_node_from_key(keys[0])
        waitaof = ("WAITAOF", 1, 0, fsync_timeout_ms)

        def commands(pipe: Any) -> None:
            pipe.execute_command("EVALSHA", self._record_event.sha, len(keys), *keys, *args)
            if node is None:
                pipe.execute_command(*waitaof)
            else:  # a key-less command: sent to the script's master, in its batch
                pipe.execute_command(*waitaof, target_nodes=node)

        # a cluster must not follow a redirection here: the script would run elsewhere
        # than the WAITAOF, which would then confirm nothing
        options = {"allow_redirections": False} if self.cluster else {}
        outcome, acks = await self._pipelined(commands, self._record_event, **options)
        if isinstance(outcome, (AskError, TryAgainError)) and node is not None:
            await self._follow(keys[0])
        if isinstance(outcome, Exception):
            raise outcome
        confirmed = not isinstance(acks, Exception) and acks[0] >= 1
        if node is not None and not self._serves(node, keys[0]):
            confirmed = False  # the slot moved meanwhile: the WAITAOF proves nothing
        # an error instead of acks: the AOF was switched off since persistence was probed
        return Recorded(int(outcome), on_disk=confirmed)

    def _serves(self, node: ClusterNode, key: str) -> bool:
        """``node`` is still the master of ``key``'s slot, as far as the client knows."""
        assert isinstance(self.client, RedisCluster)
        try:
            return self.client.get_node_from_key(key) == node
        except SlotNotCoveredError:  # the client dropped its slot map meanwhile
            return False

    async def _follow(self, key: str) -> None:
        """Let the cluster client follow a redirection of ``key``'s slot (MOVED after a
        failover updates its slot map) with a read, so the next event goes where the slot
        is now; the event itself was not run and is refused (503: retry)."""
        assert isinstance(self.client, RedisCluster)
        await self.client.exists(key)

    async def counts(
        self, experiment: str, run: str, arms: Sequence[str]
    ) -> tuple[dict[str, ArmCounts], dict[str, ArmCounts]]:
        """Counters of the run's configured arms, and of any other arm that served
        exposures in the run (unknown to the configuration), in pipelined round trips."""
        seen = {m.decode() for m in await self.client.smembers(self._key(experiment, run, "arms"))}
        unknown = sorted(seen - set(arms))
        every = [*arms, *unknown]
        names = ("imps", "clicks", "pos", "ts", "seg-imps", "seg-clicks")
        async with self.client.pipeline(transaction=False) as pipe:
            for arm in every:
                for name in names:
                    pipe.hgetall(self._key(experiment, run, f"{name}:{arm}"))
            replies = await pipe.execute()

        def ints(fields: dict[bytes, bytes]) -> dict[str, int]:
            return {key.decode(): int(value) for key, value in fields.items()}

        width = len(names)
        counted = {
            arm: ArmCounts(*(ints(replies[width * i + j]) for j in range(width)))
            for i, arm in enumerate(every)
        }
        return {a: counted[a] for a in arms}, {a: counted[a] for a in unknown}

    async def runs(self, experiment: str) -> dict[str, dict]:
        """Every run of the experiment seen in the log: run id -> its configuration."""
        fields = await self.client.hgetall(self.keys.runs(experiment))
        return {run.decode(): orjson.loads(config) for run, config in fields.items()}

    async def run_totals(self, experiment: str, run: str) -> dict[str, dict[str, int]]:
        """Per arm that served in ``run``: its users, impressions and clicks."""
        arms = sorted(
            m.decode() for m in await self.client.smembers(self._key(experiment, run, "arms"))
        )
        configured, _ = await self.counts(experiment, run, arms)
        return {
            arm: {
                "users": len(c.impressions),
                "impressions": sum(c.impressions.values()),
                "clicks": sum(c.clicks.values()),
            }
            for arm, c in configured.items()
        }
