"""A chaos-and-load scenario against a running API, on loopback only: the measurements of
issue 13's bar, shared by ``tests/test_chaos.py`` (small, in-process) and
``benchmarks/bench_chaos.py`` (1,000+ clients, the API in its own process).

Each client session ranks themes for a user inside the A/B experiment and clicks the
first theme (``POST /events``); a session whose event got 503 retries it once after
recovery with the same event id, as a client should. Phases:

1. ``up``: ``clients`` concurrent sessions, Redis up throughout;
2. ``outage``: ``clients`` concurrent sessions; meanwhile (once ``kill_at`` of as many
   rankings as the first phase served are served) Redis is killed (``kill -9``) and,
   ``outage_s`` later, restarted;
3. ``after``: ``clients`` concurrent sessions once Redis is back;
4. ``odd``: ``odd_requests`` requests with made-up methods, paths and answers, to check
   that ``/metrics`` keeps the series count it had after the three phases;
5. ``big body``: one unauthenticated ``PUT /users/u1/features`` announcing a 50 MB JSON
   body (sent in full only if the server waits for it), with the API's memory around it.

Nothing here starts or stops processes: the caller passes ``kill_redis``/``start_redis``
(and ``rss`` for the API's memory), so the same scenario runs against an external or an
embedded Redis.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

EXPERIMENT = "themes"
K = 3


@dataclass
class Phase:
    """What one phase's sessions saw."""

    rank_status: Counter[int] = field(default_factory=Counter)
    event_status: Counter[int] = field(default_factory=Counter)
    served: int = 0  # rankings answered 200
    logged: int = 0  # ... of which the answer said the exposure was logged
    acknowledged: set[str] = field(default_factory=set)  # event ids answered 202
    retried: list[tuple[str, dict]] = field(default_factory=list)  # 503'd events to retry

    def summary(self) -> dict[str, Any]:
        return {
            "rank_status": dict(sorted(self.rank_status.items())),
            "event_status": dict(sorted(self.event_status.items())),
            "served": self.served,
            "exposures_logged": self.logged,
            "exposures_unlogged": self.served - self.logged,
            "events_acknowledged": len(self.acknowledged),
        }


async def exchange(
    base: str, method: str, path: str, body: Any = None, timeout: float = 60.0
) -> tuple[int, bytes]:
    """One request on its own connection (raw asyncio streams: an HTTP client library costs
    several times the CPU per request, which would measure the client): (status, body)."""
    host, port = base.removeprefix("http://").split(":")
    payload = b"" if body is None else orjson.dumps(body)
    head = (
        f"{method} {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n"
        f"content-type: application/json\r\ncontent-length: {len(payload)}\r\n\r\n"
    ).encode()
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), timeout)
    try:
        writer.write(head + payload)
        raw = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
    status_line, _, rest = raw.partition(b"\r\n")
    content = rest.partition(b"\r\n\r\n")[2]
    return (int(status_line.split()[1]) if status_line else 0), content


async def call(base: str, method: str, path: str, body: Any = None, timeout: float = 60.0):
    """One request on its own connection: (status, parsed JSON or raw bytes)."""
    status, content = await exchange(base, method, path, body, timeout)
    try:
        return status, orjson.loads(content)
    except orjson.JSONDecodeError:
        return status, content


async def session(base: str, phase: Phase, user_id: str, tag: str) -> None:
    """Rank, then click the first theme shown."""
    body = {"user_id": user_id, "k": K, "experiment": EXPERIMENT}
    status, ranking = await call(base, "POST", "/themes/rank", body)
    phase.rank_status[status] += 1
    if status != 200:
        return
    phase.served += 1
    phase.logged += bool(ranking["exposure_logged"])
    event = {
        "event_id": f"{tag}-{ranking['request_id']}",
        "request_id": ranking["request_id"],
        "type": "click",
        "theme_id": ranking["themes"][0]["theme_id"],
    }
    status, _ = await call(base, "POST", "/events", event)
    phase.event_status[status] += 1
    if status == 202:
        phase.acknowledged.add(event["event_id"])
    elif status == 503:
        phase.retried.append((event["event_id"], event))


async def sessions(base: str, phase: Phase, users: list[str], tag: str) -> None:
    await asyncio.gather(*(session(base, phase, u, tag) for u in users))


async def retry_events(base: str, phase: Phase) -> Counter[int]:
    """Post the 503'd events again, same ids (what a client does after a 503)."""
    statuses: Counter[int] = Counter()

    async def one(event_id: str, event: dict) -> None:
        status, _ = await call(base, "POST", "/events", event)
        statuses[status] += 1
        if status == 202:
            phase.acknowledged.add(event_id)

    await asyncio.gather(*(one(i, e) for i, e in phase.retried))
    return statuses


def odd_request(i: int) -> bytes:
    """A request h11 accepts, whose method, path and answer vary with ``i``."""
    kind = i % 4
    if kind == 0:  # made-up method on a real route: 405
        return b"M%dX /users/u%d/tags HTTP/1.1\r\nhost: x\r\n\r\n" % (i, i)
    if kind == 1:  # made-up method and path: 404
        return b"Q%d /nowhere/%d?x=%d HTTP/1.1\r\nhost: x\r\n\r\n" % (i, i, i)
    if kind == 2:  # a real route with a bad k: 422
        return b"GET /users/u%d/tags?k=-%d HTTP/1.1\r\nhost: x\r\n\r\n" % (i, i)
    return b"GET /x%d HTTP/1.1\r\nhost: x\r\n\r\n" % i  # unknown path: 404


async def pipelined(base: str, start: int, count: int) -> Counter[int]:
    """``count`` odd requests pipelined on one connection; their statuses."""
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"".join(odd_request(start + i) for i in range(count)))
    await writer.drain()
    statuses: Counter[int] = Counter()
    buffer = b""
    while sum(statuses.values()) < count:
        chunk = await asyncio.wait_for(reader.read(1 << 16), 60)
        if not chunk:
            break
        buffer += chunk
        while (at := buffer.find(b"HTTP/1.1 ")) >= 0 and len(buffer) >= at + 12:
            statuses[int(buffer[at + 9 : at + 12])] += 1
            buffer = buffer[at + 12 :]
    writer.close()
    return statuses


async def odd_traffic(base: str, total: int, connections: int = 8) -> Counter[int]:
    per = total // connections
    parts = await asyncio.gather(*(pipelined(base, c * per, per) for c in range(connections)))
    return sum(parts, Counter())


def redis_errors(metrics: bytes) -> dict[str, float]:
    """``tagprofile_redis_errors_total`` by kind."""
    found = {}
    for line in metrics.decode().splitlines():
        if line.startswith("tagprofile_redis_errors_total{"):
            kind = line.split('kind="', 1)[1].split('"', 1)[0]
            found[kind] = float(line.rsplit(" ", 1)[1])
    return found


async def big_body(base: str, size: int = 50 * 2**20) -> int:
    """An unauthenticated 50 MB ``PUT`` of features: its status. The body is sent only if
    the server has not answered within a second of the request head."""
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    head = (
        f"PUT /users/u1/features HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n"
        f"content-type: application/json\r\ncontent-length: {size}\r\n\r\n"
    ).encode()
    writer.write(head)
    try:
        answer = await asyncio.wait_for(reader.read(65536), 1.0)
    except TimeoutError:  # it waits for the body: send it, 1 MiB at a time
        prefix, chunk = b'{"hist_tags": [', b"1," * 2**19
        writer.write(prefix)
        left = size - len(prefix) - 3
        while left > 0:
            piece = chunk[: min(len(chunk), left)]  # "1,1,...": valid whatever the cut
            writer.write(piece)
            await writer.drain()
            left -= len(piece)
        writer.write(b"1]}")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(65536), 120)
    writer.close()
    return int(answer.split()[1]) if answer else 0


def series_count(metrics: bytes) -> int:
    return sum(1 for line in metrics.decode().splitlines() if line and line[0] != "#")


async def metrics_series(base: str) -> int:
    status, body = await call(base, "GET", "/metrics")
    assert status == 200
    return series_count(body if isinstance(body, bytes) else orjson.dumps(body))


async def wait_until_up(base: str, timeout: float = 60.0) -> float:
    """Seconds until ``/readyz`` says Redis is up and a ranking's exposure is logged."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        status, ready = await call(base, "GET", "/readyz")
        if status == 200 and ready.get("redis") == "up":
            body = {"user_id": "probe", "k": K, "experiment": EXPERIMENT}
            status, ranking = await call(base, "POST", "/themes/rank", body)
            if status == 200 and ranking["exposure_logged"]:
                return time.monotonic() - start
        await asyncio.sleep(0.02)
    raise TimeoutError("the service did not recover")


async def stored(base: str) -> dict[str, int]:
    """What the A/B log holds for the current run (after recovery)."""
    status, report = await call(base, "GET", f"/experiments/{EXPERIMENT}/report")
    assert status == 200, report
    arms = report["arms"].values()
    return {
        "impressions": sum(a["impressions"] for a in arms),
        "clicks": sum(a["clicks"] for a in arms),
    }


@dataclass(frozen=True)
class Chaos:
    """The scenario's knobs and the hooks into the processes it does not own."""

    base: str
    users: list[str]
    clients: int
    kill_redis: Callable[[], None]
    start_redis: Callable[[], None]
    rss: Callable[[], int] | None = None
    outage_s: float = 1.0
    kill_at: float = 0.05  # into the outage phase, as a fraction of the up phase's rankings
    odd_requests: int = 10_000


async def run(chaos: Chaos) -> dict[str, Any]:
    base, n = chaos.base, chaos.clients
    pick = [chaos.users[i % len(chaos.users)] for i in range(n)]
    rss_before = chaos.rss() if chaos.rss else None

    phases = {name: Phase() for name in ("up", "outage", "after")}
    started = time.monotonic()
    await sessions(base, phases["up"], pick, "up")

    async def outage() -> tuple[float, float]:
        # once the phase has served a share of the rankings the up phase served: inside the
        # phase by construction (a fixed delay fell after it once the answers got faster)
        while phases["outage"].served < max(1, chaos.kill_at * phases["up"].served):
            await asyncio.sleep(0.002)
        await asyncio.to_thread(chaos.kill_redis)
        killed = time.monotonic()
        await asyncio.sleep(chaos.outage_s)
        await asyncio.to_thread(chaos.start_redis)
        return killed, time.monotonic()

    load = sessions(base, phases["outage"], pick, "outage")
    _, (killed, restarted) = await asyncio.gather(load, outage())
    recovery_s = await wait_until_up(base)
    retries = await retry_events(base, phases["outage"])
    await sessions(base, phases["after"], pick, "after")
    await odd_traffic(base, 64)  # every kind of odd answer once, so its series exists
    await metrics_series(base)  # and the scrape's own
    series_before = await metrics_series(base)
    odd = await odd_traffic(base, chaos.odd_requests)
    series_after = await metrics_series(base)
    _, metrics = await call(base, "GET", "/metrics")
    rss_after = chaos.rss() if chaos.rss else None  # after phases 1-4
    big_status = await big_body(base)
    rss_big_after = chaos.rss() if chaos.rss else None
    log = await stored(base)
    elapsed = time.monotonic() - started

    served = sum(p.served for p in phases.values()) + 1  # + the recovery probe's ranking
    logged = sum(p.logged for p in phases.values()) + 1
    acknowledged = sum(len(p.acknowledged) for p in phases.values())
    statuses = Counter[int]()
    for p in phases.values():
        statuses += p.rank_status + p.event_status
    statuses += retries + odd + Counter({200: 1})  # the recovery probe
    return {
        "clients": n,
        "seconds": round(elapsed, 1),
        "phases": {name: p.summary() for name, p in phases.items()},
        "event_retries": dict(sorted(retries.items())),
        "requests_by_status": dict(sorted(statuses.items())),
        "server_errors": sum(c for s, c in statuses.items() if s >= 500 and s != 503),
        "exposures_served": served,
        "exposures_logged": logged,
        "exposures_in_redis": log["impressions"] // K,
        "exposures_unlogged_while_up": phases["up"].served
        - phases["up"].logged
        + phases["after"].served
        - phases["after"].logged,
        "events_acknowledged": acknowledged,
        "events_in_redis": log["clicks"],
        "events_lost": acknowledged - log["clicks"],
        "redis_killed_after_s": round(killed - started, 2),
        "redis_down_s": round(restarted - killed, 2),
        "recovery_s": round(recovery_s, 3),
        "redis_errors": redis_errors(metrics if isinstance(metrics, bytes) else b""),
        "odd_requests": sum(odd.values()),
        "odd_by_status": dict(sorted(odd.items())),
        "metrics_series_before": series_before,
        "metrics_series_after": series_after,
        "rss_before_mb": round(rss_before / 2**20, 1) if rss_before else None,
        "rss_after_mb": round(rss_after / 2**20, 1) if rss_after else None,
        "big_body_status": big_status,
        "rss_after_big_body_mb": round(rss_big_after / 2**20, 1) if rss_big_after else None,
    }
