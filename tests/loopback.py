"""Loopback load for tests: one request per connection (``benchmarks.chaos.exchange``, raw
asyncio streams: an httpx client costs several times the CPU per request, which on a 2-core
machine would measure the client instead of the server), answers as ``Answer``."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import orjson

from benchmarks.chaos import exchange


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


async def request(
    base: str, method: str, path: str, body: Any = None, timeout: float = 60.0
) -> Answer:
    """Send one request on a fresh connection and read the whole answer."""
    return Answer(*await exchange(base, method, path, body, timeout))


async def concurrently(base: str, calls: list[tuple[str, str, Any]]) -> list[Answer]:
    """Every ``(method, path, body)`` at once, each on its own connection."""
    return await asyncio.gather(*(request(base, m, p, b) for m, p, b in calls))
