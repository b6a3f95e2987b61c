"""A hot reload that reaches every worker and replica: the bundle they should all serve is
recorded in Redis, and each process checks the record and follows it.

``POST /admin/reload`` reaches one worker; that worker records the bundle once its own swap
succeeded, and the others reload it within ``reload_poll_s``. A key that every process
polls, not pub/sub: a worker that was restarted, or cut off from Redis when the reload
happened, still finds it (a restarted worker follows the record during start-up). ``serve
--workers N`` records the configured bundle before its workers start, so a record an earlier
run left behind is never followed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson

log = logging.getLogger("service")


def serving_record(bundle: Path, model_version: str | None = None) -> bytes:
    """The value of the record (``Keys.serving``): the bundle's absolute path, the version
    it announced and when, for people reading Redis."""
    value = {"bundle": str(Path(bundle).resolve()), "model_version": model_version}
    return orjson.dumps({**value, "at": round(time.time(), 3)})


def recorded_bundle(raw: bytes | None) -> tuple[Path, str | None] | None:
    """(bundle, model version) of a record; None for no record or an unreadable one."""
    if not raw:
        return None
    try:
        record = orjson.loads(raw)
        return Path(record["bundle"]), record.get("model_version")
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        log.warning("ignoring an unreadable serving record: %r", raw[:200])
        return None


class ReloadFollower:
    """Reloads this process's model whenever the record names another bundle.

    ``read`` and ``write`` reach the record through the store's circuit breaker (they raise
    ``StoreUnavailable`` while Redis is down: the next check tries again); ``reload`` is
    the state's reload (it raises ``ReloadError`` and keeps the old model on failure);
    ``serving`` says which bundle, and version, this process serves now (a bundle
    exported again into the same directory announces a new version).
    """

    def __init__(
        self,
        *,
        read: Callable[[], Awaitable[bytes | None]],
        write: Callable[[bytes], Awaitable[object]],
        reload: Callable[[Path], Awaitable[object]],
        serving: Callable[[], tuple[Path, str]],
        interval_s: float,
    ) -> None:
        self._read, self._write, self._reload = read, write, reload
        self._serving = serving
        self.interval_s = interval_s
        self._seen: bytes | None = None
        self._task: asyncio.Task[None] | None = None

    async def announce(self, bundle: Path, model_version: str) -> None:
        """Record the bundle this process has just swapped in, for the others."""
        record = serving_record(bundle, model_version)
        self._seen = record  # not a change to follow
        await self._write(record)

    async def check(self) -> bool:
        """Follow the record once; True when it made this process reload."""
        raw = await self._read()
        if raw == self._seen:
            return False
        recorded = recorded_bundle(raw)
        if recorded is not None:
            bundle, version = recorded
            path, serving_version = self._serving()
            if bundle.resolve() != path.resolve() or version not in (None, serving_version):
                log.info("reloading %s: another worker serves it now", bundle)
                await self._reload(bundle)  # on failure: tried again at the next check
                self._seen = raw
                return True
        self._seen = raw
        return False

    def start(self) -> None:
        self._task = asyncio.create_task(self._follow(), name="reload-follower")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.check()
            except Exception as error:  # Redis down or a bundle that fails: keep serving
                log.warning("could not follow the serving record: %s", error)
