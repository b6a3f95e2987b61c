"""Micro-batching: concurrent cache misses share one model run.

One onnxruntime call over 64 users costs little more than a call over one, so requests
that miss the cache within a short window (``max_wait_s``, a few ms) are gathered, up to
``max_batch``, into one call. The call runs in a worker thread, off the event loop; while
it runs, the next batch gathers. ``max_batch = 1`` turns batching off: every request runs
its own call in the default thread pool (the baseline of the benchmark).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar

import numpy as np

Item = TypeVar("Item")
BatchObserver = Callable[[int, float], None]
"""Called after each model run with the batch size and the run's seconds."""


class MicroBatcher(Generic[Item]):
    """Gathers ``submit``-ted items into calls of ``run(items) -> rows``."""

    def __init__(
        self,
        run: Callable[[Sequence[Item]], np.ndarray],
        *,
        max_batch: int = 64,
        max_wait_s: float = 0.002,
        observe: BatchObserver | None = None,
    ) -> None:
        if max_batch < 1 or max_wait_s < 0:
            raise ValueError("max_batch must be >= 1 and max_wait_s >= 0")
        self._run = run
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._observe = observe
        self._queue: asyncio.Queue[tuple[Item, asyncio.Future[Any]] | None] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self._closing = False

    @property
    def enabled(self) -> bool:
        return self.max_batch > 1

    async def submit(self, item: Item) -> np.ndarray:
        """The model's output row for ``item``."""
        if not self.enabled or self._closing:  # a request that outlived a reload still runs
            return (await asyncio.get_running_loop().run_in_executor(None, self._timed, [item]))[0]
        if self._worker is None:
            self._queue = asyncio.Queue()
            self._worker = asyncio.create_task(self._loop(), name="micro-batcher")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        assert self._queue is not None
        self._queue.put_nowait((item, future))
        return await future

    def _timed(self, items: Sequence[Item]) -> np.ndarray:
        start = time.perf_counter()
        rows = self._run(items)
        if self._observe is not None:
            self._observe(len(items), time.perf_counter() - start)
        return rows

    async def _loop(self) -> None:
        assert self._queue is not None
        queue, loop = self._queue, asyncio.get_running_loop()
        stopping = False
        while not stopping:
            first = await queue.get()
            if first is None:
                return
            batch = [first]
            deadline = loop.time() + self.max_wait_s
            while len(batch) < self.max_batch:
                if not queue.empty():
                    entry = queue.get_nowait()
                elif (remaining := deadline - loop.time()) > 0:
                    try:
                        entry = await asyncio.wait_for(queue.get(), remaining)
                    except TimeoutError:
                        break
                else:
                    break
                if entry is None:  # close(): finish what was queued before it, then stop
                    stopping = True
                    break
                batch.append(entry)
            live = [(item, future) for item, future in batch if not future.cancelled()]
            if not live:
                continue
            try:
                rows = await loop.run_in_executor(
                    self._executor, self._timed, [item for item, _ in live]
                )
            except Exception as error:  # every waiter learns of the failure
                for _, future in live:
                    if not future.done():
                        future.set_exception(error)
                continue
            for row, (_, future) in zip(rows, live, strict=True):
                if not future.done():
                    future.set_result(row)

    async def close(self) -> None:
        """Stop gathering after the requests already queued have been answered (a reload
        must not fail requests that reached the old model)."""
        self._closing = True
        if self._worker is not None and self._queue is not None:
            self._queue.put_nowait(None)
            await self._worker
            self._worker = None
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown)
