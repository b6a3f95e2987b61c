"""Which Redis to use: the configured one, or an embedded real redis-server.

Without ``TAGPROFILE_REDIS_URL`` the first process that needs Redis (``serve``, ``load``,
``precompute``) starts an embedded server on ``redis_data_dir`` (append-only persistence,
so what ``load`` wrote is there for ``serve``) and records its URL in
``redis_data_dir/redis.url``. A second process on the same data directory reuses that
running server instead of starting a rival one on the same files.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from service.store.embedded import EmbeddedRedis

URL_FILE = "redis.url"


def running_embedded(data_dir: Path) -> str | None:
    """URL of a live embedded server on ``data_dir``, if another process runs one."""
    marker = Path(data_dir) / URL_FILE
    if not marker.is_file():
        return None
    url = marker.read_text().strip()
    try:
        redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5).ping()
    except (redis.RedisError, OSError, ValueError):
        return None
    return url


@contextmanager
def redis_url(configured: str | None, data_dir: Path) -> Iterator[str]:
    """Yield a Redis URL for the duration of the block (see the module docstring)."""
    if configured:
        yield configured
        return
    shared = running_embedded(data_dir)
    if shared:
        yield shared
        return
    server = EmbeddedRedis(data_dir, persistence=True).start()
    marker = Path(data_dir) / URL_FILE
    marker.write_text(server.url + "\n")
    try:
        yield server.url
    finally:
        marker.unlink(missing_ok=True)
        server.stop()
