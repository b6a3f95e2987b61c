"""``/metrics`` cannot be grown by clients: 10,000 requests with made-up methods, paths,
query strings and answers leave the number of series where it was."""

from __future__ import annotations

import asyncio

import httpx

from benchmarks.chaos import odd_request
from tests.service_helpers import make_settings, served

REQUESTS = 10_000
CONNECTIONS = 8


def series(text: str) -> int:
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


async def blast(base: str, start: int, count: int) -> int:
    """Pipeline ``count`` odd requests on one connection; the number of answers."""
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"".join(odd_request(start + i) for i in range(count)))
    await writer.drain()
    answers = 0
    buffer = b""
    while answers < count:
        chunk = await asyncio.wait_for(reader.read(1 << 16), 30)
        if not chunk:
            break
        buffer += chunk
        answers += chunk.count(b"HTTP/1.1 ")
    writer.close()
    return answers


async def odd_traffic(base: str) -> int:
    per = REQUESTS // CONNECTIONS
    done = await asyncio.gather(*(blast(base, c * per, per) for c in range(CONNECTIONS)))
    return sum(done)


def test_odd_requests_leave_the_series_count_fixed(service_bundle, redis_server):
    settings = make_settings(service_bundle, redis_server.url)
    with served(settings, load_users=False) as base:
        asyncio.run(blast(base, 0, 50))  # every kind of answer once, so its series exists
        httpx.get(f"{base}/metrics")  # and the scrape's own
        before = httpx.get(f"{base}/metrics").text
        assert asyncio.run(odd_traffic(base)) == REQUESTS
        after = httpx.get(f"{base}/metrics").text
    assert series(after) == series(before), "clients added metric series"
    assert 'method="other"' in after and 'status="4xx"' in after
    assert "M1X" not in after and "/nowhere" not in after
