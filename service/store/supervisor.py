"""Keeps an embedded redis-server running: a server that dies (crash, OOM kill,
``kill -9``) is started again within a fraction of a second, on its port and with its
data directory, so its append-only file brings back everything it had acknowledged.

Without it a crashed embedded Redis stayed down until the API was restarted: every event
was refused and every exposure went unlogged (issue 13). The service's Redis client
reconnects by itself; ``/readyz`` reports the restarts.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from service.store.embedded import ChildOwningThread, EmbeddedRedis, RedisServerError

log = logging.getLogger("service.store")

CHECK_INTERVAL_S = 0.2
"""How often the server process is checked (a wait on its handle would need a thread
per server anyway; polling keeps one short loop)."""


class Supervisor:
    """Watches one :class:`EmbeddedRedis` from a thread and restarts it when it dies."""

    def __init__(
        self,
        server: EmbeddedRedis,
        *,
        on_restart: Callable[[EmbeddedRedis], None] | None = None,
        interval_s: float = CHECK_INTERVAL_S,
    ) -> None:
        self.server = server
        self.on_restart = on_restart
        self.interval_s = interval_s
        self.restarts = 0
        self.last_error: str | None = None
        self._stopping = threading.Event()
        self._thread = ChildOwningThread(target=self._watch, name="redis-supervisor", daemon=True)

    def start(self) -> Supervisor:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching (before the server is stopped on purpose)."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()

    def _watch(self) -> None:
        backoff = self.interval_s
        while not self._stopping.wait(backoff):
            if self.server.running:
                backoff = self.interval_s
                continue
            try:
                self.server.start()
            except RedisServerError as error:  # e.g. the port was taken meanwhile
                self.last_error = str(error)
                log.error("embedded Redis died and could not be restarted: %s", error)
                backoff = min(backoff * 2, 5.0)
                continue
            if self.on_restart is not None:
                self.on_restart(self.server)
            self.restarts += 1
            self.last_error = None
            log.warning(
                "embedded Redis had died; restarted it (pid %s, restart %d) on %s",
                self.server.pid,
                self.restarts,
                self.server.url,
            )
