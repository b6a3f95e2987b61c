"""The app's lifespan-managed resources, the only state the service keeps (DESIGN §9).

``start`` builds everything before the first request (a bad bundle or experiment file
stops start-up, loudly) and ``stop`` releases it. Route handlers never hold this object:
they receive its parts through the typed dependencies of :mod:`service.api.deps`. A hot
reload is one reference swap of :attr:`ServiceState.profiles`, so a request that started
on the old model finishes on it and none mixes two versions.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from fastapi.concurrency import run_in_threadpool

from service.ab import ABStore, Experiment, load_experiments
from service.metrics import ServiceMetrics
from service.model import LoadedModel, Profiles, Serving, load_model
from service.reload_sync import ReloadFollower
from service.settings import Settings
from service.store import (
    NOT_DURABLE,
    Endpoint,
    Keys,
    Persistence,
    RedisStore,
    StoreUnavailable,
    redis_endpoint,
)

T = TypeVar("T")
log = logging.getLogger("service")


class ReloadError(Exception):
    """A bundle that could not be swapped in; the model serving before keeps serving."""

    def __init__(self, serving_version: str, error: Exception | str) -> None:
        super().__init__(f"reload failed, still serving {serving_version}: {error}")


class ReloadConflict(ReloadError):
    """The bundle is another model under a version already serving (see
    :func:`check_versions`)."""


class VersionConflict(ValueError):
    """Two different models under one version: they would share cached profiles."""


def check_versions(models: Iterable[LoadedModel]) -> None:
    """Refuse models that announce one version but differ (graph or vocabularies): the
    profile cache is keyed by version, so one would serve the other's profiles."""
    seen: dict[str, LoadedModel] = {}
    for model in models:
        other = seen.setdefault(model.version, model)
        if other.identity != model.identity:
            raise VersionConflict(
                f"model_version {model.version!r} is already used by another model "
                f"({other.bundle.path}); give this model its own version"
            )


@dataclass(frozen=True)
class ABTesting:
    """The running A/B test: the configured experiments, the models of the arms that name
    their own bundle, and the event log, reached through the store's circuit breaker;
    and what an acknowledged event requires of Redis's persistence."""

    experiments: Mapping[str, Experiment]
    arm_serving: Mapping[tuple[str, str], Serving]
    log: ABStore
    store: RedisStore
    require_durable: bool = False
    fsync_timeout_s: float = 2.0

    async def call(self, operation: Callable[[], Awaitable[T]]) -> T:
        """Run an event-log operation; raises ``StoreUnavailable`` when Redis is down."""
        return await self.store.call(operation)

    async def refusal(self) -> str | None:
        """Why events must be refused now (durability required, Redis has no AOF), once
        a probe of a new connection has told."""
        if not self.require_durable:
            return None
        persistence = await self.store.current_persistence()
        if persistence and persistence.events_durable:
            return None
        if persistence is None:
            return "Redis persistence is not known yet (TAGPROFILE_REQUIRE_DURABLE_EVENTS)"
        return (
            "Redis has no append-only file, so an acknowledged event could be lost "
            "(TAGPROFILE_REQUIRE_DURABLE_EVENTS)"
        )

    @property
    def fsync_timeout_ms(self) -> int | None:
        """How long an event waits for WAITAOF; None where the server cannot confirm."""
        persistence = self.store.persistence
        if persistence is None or not (persistence.aof and persistence.waitaof):
            return None
        return round(self.fsync_timeout_s * 1000) if self.fsync_timeout_s > 0 else None


class ServiceState:
    """Settings, metrics, Redis, the profile path of the model serving now, and A/B."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        self.metrics = ServiceMetrics()
        self.store: RedisStore | None = None
        self.profiles: Profiles | None = None
        self.ab: ABTesting | None = None
        self.endpoint: Endpoint | None = None
        self.follower: ReloadFollower | None = None
        self.reload_lock = asyncio.Lock()

    @property
    def serving(self) -> Serving | None:
        """The model serving now, with its batcher (None before start-up)."""
        return self.profiles.serving if self.profiles is not None else None

    def load(self, path: str | Path) -> LoadedModel:
        s = self.settings
        return load_model(path, device=s.device, max_k=s.max_k, intra_op_threads=s.intra_op_threads)

    def serve(self, model: LoadedModel) -> Serving:
        serving = Serving.start(
            model,
            max_batch=self.settings.max_batch,
            max_wait_s=self.settings.batch_wait_ms / 1000,
            observe=self.metrics.observe_batch,
        )
        self.metrics.set_model(model.version, model.runtime.provider)
        return serving

    async def start(self, stack: ExitStack) -> None:
        """Load the models, then connect Redis (an embedded server, when no URL is set,
        runs until ``stack`` closes)."""
        s = self.settings
        model = self.load(s.bundle)
        experiments = load_experiments(s.experiments) if s.experiments is not None else {}
        arm_models = {
            (experiment.name, arm.name): self.load(arm.bundle)
            for experiment in experiments.values()
            for arm in experiment.arms
            if arm.bundle is not None
        }
        check_versions([model, *arm_models.values()])
        arm_serving = {key: self.serve(arm_model) for key, arm_model in arm_models.items()}
        self.endpoint = stack.enter_context(redis_endpoint(s.redis_url, s.redis_data_dir))
        store = RedisStore(
            self.endpoint.url,
            self.keys,
            timeout_s=s.redis_timeout_s,
            retry_s=s.redis_retry_s,
            feature_cache_size=s.feature_cache_size,
            profile_memory_size=s.profile_memory_size,
            max_connections=s.redis_max_connections,
            pool_timeout_s=s.redis_pool_timeout_s,
            cluster=s.redis_cluster,
        )
        store.on_state = lambda up: self.metrics.redis_up.set(int(up))
        store.on_error = lambda kind: self.metrics.redis_errors.labels(kind).inc()
        store.on_persistence = self.persistence_changed
        self.metrics.redis_up.set(int(await store.ping()))
        await store.refresh_persistence()
        self.store = store
        self.ab = ABTesting(
            experiments,
            arm_serving,
            ABStore(store.client, s.key_prefix),
            store,
            require_durable=s.require_durable_events,
            fsync_timeout_s=s.event_fsync_timeout_s,
        )
        self.profiles = Profiles(
            self.serve(model), store, self.metrics, s.profile_ttl_s, s.profile_ttl_jitter
        )
        if s.reload_sync_s > 0:
            await self.follow_reloads(store, s.reload_sync_s)

    async def follow_reloads(self, store: RedisStore, interval_s: float) -> None:
        """Serve what the other workers serve (:mod:`service.reload_sync`): now, since a
        restarted worker may have missed a reload, and from then on."""
        key, client = self.keys.serving, store.client

        async def reload(path: Path) -> None:
            await self.reload(path, announce=False)

        self.follower = ReloadFollower(
            read=lambda: store.call(lambda: client.get(key)),
            write=lambda record: store.call(lambda: client.set(key, record)),
            reload=reload,
            serving=lambda: (self.serving.model.bundle.path, self.serving.model.version),
            interval_s=interval_s,
        )
        try:
            await self.follower.check()
        except (StoreUnavailable, ReloadError) as error:
            log.warning("serving the configured bundle: %s", error)
        self.follower.start()

    def persistence_changed(self, persistence: Persistence) -> None:
        """Warn, loudly, whenever Redis (again) would lose acknowledged events."""
        self.metrics.events_durable.set(int(persistence.events_durable))
        if not persistence.events_durable:
            url = self.store.url if self.store is not None else self.settings.redis_url
            log.warning(NOT_DURABLE.format(url=url))

    async def stop(self) -> None:
        """Stop following reloads, answer the queued model runs, then close Redis."""
        if self.follower is not None:
            await self.follower.stop()
        arms = self.ab.arm_serving.values() if self.ab is not None else ()
        for serving in (self.serving, *arms):
            if serving is not None:
                await serving.close()
        if self.store is not None:
            await self.store.close()
        self.metrics.release()

    async def reload(self, path: str | Path, *, announce: bool = True) -> tuple[Serving, Serving]:
        """Load and verify the bundle at ``path`` off the event loop, then swap it in;
        returns (new, previous). Raises :class:`ReloadError` on any failure. With
        ``announce``, the other workers are told to follow (when they follow reloads)."""
        async with self.reload_lock:
            profiles = self.profiles
            assert profiles is not None, "reload before start-up"
            previous = profiles.serving
            try:
                model = await run_in_threadpool(self.load, path)
            except Exception as error:  # any failure keeps the old model serving
                self.metrics.reloads.labels("failed").inc()
                raise ReloadError(previous.model.version, error) from None
            arms = self.ab.arm_serving.values() if self.ab is not None else ()
            try:
                check_versions([model, previous.model, *(arm.model for arm in arms)])
            except VersionConflict as error:
                self.metrics.reloads.labels("failed").inc()
                raise ReloadConflict(previous.model.version, error) from None
            current = self.serve(model)
            self.profiles = profiles.using(current)
            self.metrics.reloads.labels("ok").inc()
            await previous.close()
        if announce and self.follower is not None:
            try:
                await self.follower.announce(Path(path), model.version)
            except StoreUnavailable as error:
                log.warning("reloaded here only, the other workers were not told: %s", error)
        return current, previous
