"""A minimal HTTP/1.1 client for bounded loopback load in tests: one request per
connection on raw asyncio streams (an httpx client costs several times the CPU per
request, which on a 2-core machine would measure the client instead of the server)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import orjson


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
    _, _, content = rest.partition(b"\r\n\r\n")
    return Answer(int(status_line.split()[1]), content)


async def concurrently(base: str, calls: list[tuple[str, str, Any]]) -> list[Answer]:
    """Every ``(method, path, body)`` at once, each on its own connection."""
    return await asyncio.gather(*(request(base, m, p, b) for m, p, b in calls))
