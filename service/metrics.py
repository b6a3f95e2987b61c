"""Prometheus metrics of one app instance (its own registry, so several apps in one
process, as in the tests, do not collide).

Under ``serve --workers N`` every worker writes its samples to files in
``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's multiprocess mode) and ``/metrics``, on
whichever worker answers, reads them all: counters and histograms are the sums over the
workers, a gauge says what the workers it names agree on (``redis_up`` is the minimum: 0
when any worker finds Redis down; ``model_info`` the maximum: each version some live worker
serves).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_mode() -> bool:
    """Whether this process shares its metrics with other workers (through files)."""
    return bool(os.environ.get(MULTIPROCESS_DIR))


LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def forget_dead_workers() -> None:
    """Drop the live gauges of workers that died without cleaning up (SIGKILL, OOM kill):
    uvicorn restarts them under new pids, and their last values would stay in the minima
    and maxima of every scrape."""
    folder = Path(os.environ[MULTIPROCESS_DIR])
    for path in folder.glob("gauge_live*_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid)
        except PermissionError:  # alive, another user's
            pass


class ServiceMetrics:
    def __init__(self) -> None:
        if multiprocess_mode():
            forget_dead_workers()
        self._model_labels: tuple[str, str] | None = None
        self.registry = CollectorRegistry()
        r = self.registry
        self.request_seconds = Histogram(
            "tagprofile_request_seconds",
            "HTTP request latency by method, route template and status class",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.profile_cache = Counter(
            "tagprofile_profile_cache_total",
            "profile cache lookups by result (hit, miss, error = Redis unavailable)",
            ["result"],
            registry=r,
        )
        # bound once: the hot path counts without a labels() lookup
        self.cache_hit, self.cache_miss, self.cache_error = (
            self.profile_cache.labels(result) for result in ("hit", "miss", "error")
        )
        self.profile_source = Counter(
            "tagprofile_profiles_total",
            "profiles computed (cache misses), by source",
            ["source"],
            registry=r,
        )
        self.batch_size = Histogram(
            "tagprofile_model_batch_size",
            "users per onnxruntime call",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.model_seconds = Histogram(
            "tagprofile_model_run_seconds",
            "seconds per onnxruntime call",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.redis_up = Gauge(
            "tagprofile_redis_up",
            "1 when Redis answered the last call (of every worker)",
            registry=r,
            multiprocess_mode="livemin",
        )
        self.events_durable = Gauge(
            "tagprofile_redis_events_durable",
            "1 when Redis keeps an append-only file (acknowledged events survive a crash)",
            registry=r,
            multiprocess_mode="livemin",
        )
        self.redis_errors = Counter(
            "tagprofile_redis_errors_total",
            "failed Redis calls by kind: busy (every pooled connection stayed busy for the "
            "pool timeout), timeout (no reply in time), refused (an error reply), down "
            "(connection refused or broken: Redis is skipped for redis_retry_s)",
            ["kind"],
            registry=r,
        )
        self.model_info = Gauge(
            "tagprofile_model_info",
            "the model serving now (value 1)",
            ["model_version", "provider"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.exposures = Counter(
            "tagprofile_ab_exposures_total",
            "experiment rankings served, by arm and whether the exposure was logged",
            ["experiment", "arm", "logged"],
            registry=r,
        )
        self.reloads = Counter(
            "tagprofile_reloads_total", "admin reloads by outcome", ["outcome"], registry=r
        )

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.model_seconds.observe(seconds)

    def set_model(self, version: str, provider: str) -> None:
        if not multiprocess_mode():
            self.model_info.clear()
        elif self._model_labels is not None:  # a worker's file keeps the old series: zero it
            self.model_info.labels(*self._model_labels).set(0)
        self._model_labels = (version, provider)
        self.model_info.labels(version, provider).set(1)

    def exposition(self) -> bytes:
        """The text ``/metrics`` answers: this app's registry, or every worker's files."""
        if not multiprocess_mode():
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)

    @staticmethod
    def release() -> None:
        """At a worker's exit: drop its live gauges (its counts stay in the sums)."""
        if multiprocess_mode():
            multiprocess.mark_process_dead(os.getpid())


KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""The HTTP methods with a label of their own; any other token (h11 accepts any) is
``other``, so no client can add series."""


def request_labels(method: str, route: Any, status: int) -> tuple[str, str, str]:
    """Bounded labels of one request: a known method or ``other``, the route template or
    ``unmatched``, the status class (``2xx``...)."""
    template = getattr(route, "path", None) or "unmatched"
    return (
        method if method in KNOWN_METHODS else "other",
        template,
        f"{status // 100}xx" if 100 <= status < 600 else "other",
    )


class RequestTimer:
    """Pure ASGI middleware: latency per route template (``/users/{user_id}/tags``, not
    per user), cheaper on the hot path than Starlette's BaseHTTPMiddleware. Every label
    is bounded (:func:`request_labels`): the series count does not grow with traffic."""

    def __init__(self, app: Any, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]

        async def send_status(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            labels = request_labels(scope["method"], scope.get("route"), status[0])
            self.metrics.request_seconds.labels(*labels).observe(time.perf_counter() - start)
