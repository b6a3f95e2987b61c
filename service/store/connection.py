"""Which Redis to use: the configured one, or an embedded real redis-server.

Without ``TAGPROFILE_REDIS_URL`` the first process that needs Redis (``serve``, ``load``,
``precompute``) starts an embedded server on ``redis_data_dir`` (append-only persistence,
so what ``load`` wrote is there for ``serve``), keeps it running (:mod:`.supervisor`) and
records it in ``redis_data_dir/redis.url``: the URL on the first line, then the server's
``run_id`` and ``pid``. A second process on the same data directory reuses that server
instead of starting a rival one on the same files, but only once the server answering at
the URL proves to be that one (same run id and pid): a marker left behind by a killed
process may point at a port that another Redis, not ours, has taken since.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis

from service.store.embedded import EmbeddedRedis
from service.store.supervisor import Supervisor

URL_FILE = "redis.url"
log = logging.getLogger("service.store")


@dataclass(frozen=True)
class Endpoint:
    """The Redis a process uses; ``supervisor`` is set when this process runs it."""

    url: str
    supervisor: Supervisor | None = None

    def describe(self) -> dict[str, object]:
        """For ``/readyz``."""
        if self.supervisor is None:
            return {"embedded": False}
        return {
            "embedded": True,
            "pid": self.supervisor.server.pid,
            "restarts": self.supervisor.restarts,
            "last_error": self.supervisor.last_error,
        }


def write_marker(data_dir: Path, server: EmbeddedRedis) -> None:
    """Record the running server (atomically: a reader never sees half a file)."""
    marker = Path(data_dir) / URL_FILE
    partial = marker.with_suffix(".tmp")
    partial.write_text(f"{server.url}\nrun_id={server.run_id} pid={server.pid}\n")
    os.replace(partial, marker)


def read_marker(data_dir: Path) -> tuple[str, str, int] | None:
    """(url, run_id, pid) of the marker, None when absent or unreadable."""
    marker = Path(data_dir) / URL_FILE
    try:
        lines = marker.read_text().splitlines()
        fields = dict(part.split("=", 1) for part in lines[1].split())
        return lines[0].strip(), fields["run_id"], int(fields["pid"])
    except (OSError, IndexError, KeyError, ValueError):
        return None


def running_embedded(data_dir: Path) -> str | None:
    """URL of a live embedded server on ``data_dir`` that another process runs, once the
    server at the marker's URL is the one the marker names (run id and pid)."""
    marker = read_marker(data_dir)
    if marker is None:
        return None
    url, run_id, pid = marker
    client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        info = client.info("server")
    except (redis.RedisError, OSError, ValueError):
        return None
    finally:
        client.close()
    if str(info.get("run_id")) != run_id or int(info.get("process_id", -1)) != pid:
        log.warning(
            "ignoring %s: the Redis at %s is not the embedded server it names (stale marker)",
            Path(data_dir) / URL_FILE,
            url,
        )
        return None
    return url


@contextmanager
def redis_endpoint(configured: str | None, data_dir: Path) -> Iterator[Endpoint]:
    """The Redis to use for the duration of the block (see the module docstring)."""
    if configured:
        yield Endpoint(configured)
        return
    shared = running_embedded(data_dir)
    if shared:
        yield Endpoint(shared)
        return
    server = EmbeddedRedis(data_dir, persistence=True).start()
    write_marker(data_dir, server)
    supervisor = Supervisor(server, on_restart=lambda s: write_marker(data_dir, s)).start()
    try:
        yield Endpoint(server.url, supervisor)
    finally:
        supervisor.stop()
        (Path(data_dir) / URL_FILE).unlink(missing_ok=True)
        server.stop()


@contextmanager
def redis_url(configured: str | None, data_dir: Path) -> Iterator[str]:
    """Just the URL of :func:`redis_endpoint` (the CLI jobs)."""
    with redis_endpoint(configured, data_dir) as endpoint:
        yield endpoint.url
