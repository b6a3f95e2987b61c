"""The FastAPI application: user tag profiles, theme ranking, admin, health and metrics.

``create_app(settings)`` builds an app whose lifespan owns every resource: the model
(onnxruntime session, feature spec, theme index), the Redis client (an embedded
redis-server when no URL is configured) and the micro-batcher. Handlers reach the model
through one reference, swapped atomically by ``POST /admin/reload``.
"""

import asyncio
import gc
import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from fastapi import Body, Depends, FastAPI, Header, HTTPException, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.ab import (
    ACCEPTED,
    DUPLICATE_EVENT,
    ABStore,
    Experiment,
    Exposure,
    build_report,
    load_experiments,
    render_html,
)
from service.api.schemas import (
    EventIn,
    EventOut,
    FeaturesStored,
    RankedThemeOut,
    RankRequest,
    RankResponse,
    Readiness,
    ReloadRequest,
    ReloadResponse,
    ThemeTagOut,
    UserTags,
)
from service.metrics import RequestTimer, ServiceMetrics
from service.model import FeatureError, LoadedModel, MicroBatcher, ProfileFormatError, load_model
from service.ranking import RankedTheme, ThemeCatalogue, ThemeTag
from service.settings import Settings
from service.store import USER_ID_PATTERN, Keys, RedisStore, StoreUnavailable, redis_url

JSON = "application/json"
INLINE_RANK_THEMES = 5000
"""Catalogues up to this size are ranked on the event loop (microseconds); larger ones in
a worker thread."""


@dataclass(frozen=True)
class Serving:
    """The model serving now and its batcher: swapped together, never mixed."""

    model: LoadedModel
    batcher: MicroBatcher[dict[str, Any]]  # rows: (all-tag scores, profile bytes)


class ServiceState:
    """The app's lifespan-managed resources."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        self.metrics = ServiceMetrics()
        self.store: RedisStore | None = None
        self.serving: Serving | None = None
        self.reload_lock = asyncio.Lock()
        self.experiments: dict[str, Experiment] = {}
        self.arm_serving: dict[tuple[str, str], Serving] = {}  # arms with their own bundle
        self.ab: ABStore | None = None

    def load(self, path: Any) -> LoadedModel:
        s = self.settings
        return load_model(path, device=s.device, max_k=s.max_k, intra_op_threads=s.intra_op_threads)

    def serve(self, model: LoadedModel) -> Serving:
        batcher = MicroBatcher(
            model.score_profiles,
            max_batch=self.settings.max_batch,
            max_wait_s=self.settings.batch_wait_ms / 1000,
            observe=self.metrics.observe_batch,
        )
        self.metrics.set_model(model.version, model.runtime.provider)
        return Serving(model, batcher)

    async def user_scores(
        self, serving: Serving, user_id: str
    ) -> tuple[tuple[np.ndarray, bytes] | None, str]:
        """((all-tag scores, profile bytes), "model") for a user with usable features,
        else (None, "popular")."""
        assert self.store is not None
        try:
            record = await self.store.get_features(user_id)
        except StoreUnavailable:
            record = None
        if record is None or not serving.model.spec.fits(record):
            return None, "popular"
        return await serving.batcher.submit(record), "model"


def popular_ranking(
    catalogue: ThemeCatalogue, k: int, candidates: list[str] | None, by: str
) -> list[RankedTheme]:
    """The control ranker: themes by a historical statistic (e.g. CTR), the same for every
    user; its scores are that statistic and carries no per-user contributions."""
    allowed = set(candidates) if candidates is not None else None
    ranked = []
    for theme in catalogue.popular(len(catalogue) if allowed else k, by=by):
        if allowed is not None and theme.theme_id not in allowed:
            continue
        tags = tuple(
            ThemeTag(tag_id=t, tag=name, weight=w, contribution=0.0)
            for t, name, w in zip(theme.tag_ids, theme.tag_names, theme.weights, strict=True)
        )
        ranked.append(
            RankedTheme(theme.theme_id, theme.title, float(theme.stats.get(by, 0.0)), tags)
        )
        if len(ranked) == k:
            break
    return ranked


def _field_of(error: dict[str, Any]) -> str:
    return ".".join(str(part) for part in error.get("loc", ()) if part != "body") or "body"


# FastAPI reads handler annotations at run time: no ``from __future__ import annotations``
# in this module, and the ``k`` bound (a setting) is written inline in the handler.
UserIdPath = Annotated[
    str, Path(pattern=USER_ID_PATTERN, description="1-128 of A-Z a-z 0-9 _ . : @ -")
]


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    state = ServiceState(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        with ExitStack() as stack:
            model = state.load(settings.bundle)  # a bad bundle stops start-up, loudly
            if settings.experiments is not None:
                state.experiments = load_experiments(settings.experiments)
                for experiment in state.experiments.values():
                    for arm in experiment.arms:
                        if arm.bundle is not None:
                            key = (experiment.name, arm.name)
                            state.arm_serving[key] = state.serve(state.load(arm.bundle))
            url = stack.enter_context(redis_url(settings.redis_url, settings.redis_data_dir))
            state.store = RedisStore(
                url,
                state.keys,
                timeout_s=settings.redis_timeout_s,
                retry_s=settings.redis_retry_s,
                feature_cache_size=settings.feature_cache_size,
            )
            state.store.on_state = lambda up: state.metrics.redis_up.set(int(up))
            state.metrics.redis_up.set(int(await state.store.ping()))
            state.ab = ABStore(state.store.client, settings.key_prefix)
            state.serving = state.serve(model)
            # start-up made ~135k long-lived objects (FastAPI, pydantic, numpy, the model):
            # keep them out of every later full collection (p99 117 -> 22 ms, RESULTS.md)
            gc.collect()
            gc.freeze()
            try:
                yield
            finally:
                for current in (state.serving, *state.arm_serving.values()):
                    await current.batcher.close()
                await state.store.close()

    app = FastAPI(
        title="tagprofile",
        summary="User–tag preference profiles and theme ranking (CTMVM, onnxruntime, Redis)",
        lifespan=lifespan,
    )
    app.state.tagprofile = state
    app.add_middleware(RequestTimer, metrics=state.metrics)
    metrics = state.metrics
    hits, misses, cache_errors = (metrics.profile_cache.labels(r) for r in ("hit", "miss", "error"))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        """422 whose ``detail`` names every bad field (``query.k: ...``), like the
        ``HTTPException`` errors; ``errors`` keeps pydantic's structured list."""
        errors = [
            {"field": _field_of(e), "message": e.get("msg"), "type": e.get("type")}
            for e in exc.errors()
        ]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return JSONResponse({"detail": detail, "errors": errors}, status_code=422)

    def serving() -> Serving:
        if state.serving is None:
            raise HTTPException(503, "no model loaded yet")
        return state.serving

    def store() -> RedisStore:
        assert state.store is not None
        return state.store

    def ab_store() -> ABStore:
        assert state.ab is not None
        return state.ab

    def require_admin(authorization: Annotated[str | None, Header()] = None) -> None:
        token = settings.admin_token
        if token is None:
            raise HTTPException(403, "admin endpoints are disabled: set TAGPROFILE_ADMIN_TOKEN")
        expected = f"Bearer {token.get_secret_value()}".encode()
        if authorization is None or not secrets.compare_digest(authorization.encode(), expected):
            raise HTTPException(
                401,
                "header Authorization: expected 'Bearer <admin token>'",
                headers={"WWW-Authenticate": "Bearer"},
            )

    @app.get(
        "/users/{user_id}/tags",
        response_class=Response,
        responses={200: {"model": UserTags, "description": "the user's top-k tags"}},
        summary="The user's top-k tags",
    )
    async def user_tags(
        user_id: UserIdPath,
        k: Annotated[int, Query(ge=1, le=settings.max_k, description="how many tags")] = 5,
    ) -> Response:
        current = serving()
        model, redis = current.model, store()
        cacheable = True
        try:
            blob = await redis.get_profile(model.version, user_id)
        except StoreUnavailable:
            blob, cacheable = None, False
            cache_errors.inc()
        if blob is not None:
            try:
                body = model.codec.response(user_id, blob, k, cached=True, source="model")
            except ProfileFormatError:
                pass  # not ours: recompute and overwrite
            else:
                hits.inc()
                return Response(body, media_type=JSON)
        if cacheable:
            misses.inc()
        scored, source = await state.user_scores(current, user_id)
        metrics.profile_source.labels(source).inc()
        if scored is None:
            body = model.codec.response(
                user_id, model.cold_start_blob, k, cached=False, source=source
            )
            return Response(body, media_type=JSON)
        blob = scored[1]
        if cacheable:
            with suppress(StoreUnavailable):
                await redis.set_profile(
                    model.version,
                    user_id,
                    blob,
                    settings.profile_ttl_s,
                    settings.profile_ttl_jitter,
                )
        body = model.codec.response(user_id, blob, k, cached=False, source=source)
        return Response(body, media_type=JSON)

    def theme_out(theme: RankedTheme) -> RankedThemeOut:
        return RankedThemeOut(
            theme_id=theme.theme_id,
            title=theme.title,
            score=theme.score,
            tags=[
                ThemeTagOut(
                    tag=t.tag, tag_id=t.tag_id, weight=t.weight, contribution=t.contribution
                )
                for t in theme.tags
            ],
        )

    async def profile_ranking(
        current: Serving, request: RankRequest
    ) -> tuple[list[RankedTheme], str]:
        """Themes by the user's tag scores x the themes' tag weights."""
        catalogue = current.model.catalogue
        assert catalogue is not None
        scored, source = await state.user_scores(current, request.user_id)
        scores = current.model.cold_start_scores if scored is None else scored[0]
        metrics.profile_source.labels(source).inc()
        if len(catalogue) <= INLINE_RANK_THEMES:
            return catalogue.rank(scores, request.k, request.candidates), source
        ranked = await run_in_threadpool(catalogue.rank, scores, request.k, request.candidates)
        return ranked, source

    @app.post("/themes/rank", summary="Rank themes for a user")
    async def rank_themes(request: RankRequest) -> RankResponse:
        current = serving()
        catalogue = current.model.catalogue
        if catalogue is None:
            raise HTTPException(404, "this model bundle has no theme catalogue (themes.json)")
        if request.candidates is not None:
            if len(request.candidates) > settings.max_candidates:
                raise HTTPException(422, f"candidates: at most {settings.max_candidates} theme ids")
            unknown = catalogue.unknown(request.candidates)
            if unknown:
                raise HTTPException(422, f"candidates: unknown theme ids {unknown}")
        request_id = uuid.uuid4().hex
        if request.experiment is None:
            ranked, source = await profile_ranking(current, request)
            return RankResponse(
                request_id=request_id,
                user_id=request.user_id,
                arm=None,
                model_version=current.model.version,
                source=source,
                themes=[theme_out(theme) for theme in ranked],
            )
        experiment = state.experiments.get(request.experiment)
        if experiment is None:
            raise HTTPException(
                422,
                f"experiment: unknown experiment {request.experiment!r} "
                f"(configured: {sorted(state.experiments)})",
            )
        arm, bucket = experiment.assign(request.user_id)
        if arm.ranker == "popular":
            ranked = popular_ranking(
                catalogue, request.k, request.candidates, experiment.popular_by
            )
            source = "statistics"
        else:
            current = state.arm_serving.get((experiment.name, arm.name), current)
            ranked, source = await profile_ranking(current, request)
        exposure = Exposure(
            experiment.name, arm.name, request.user_id, tuple(t.theme_id for t in ranked)
        )
        try:
            await store().call(lambda: ab_store().log_exposure(request_id, exposure))
            logged = True
        except StoreUnavailable:
            logged = False  # the ranking is still served; its events will be refused
        metrics.exposures.labels(experiment.name, arm.name, str(logged).lower()).inc()
        return RankResponse(
            request_id=request_id,
            user_id=request.user_id,
            arm=arm.name,
            bucket=bucket,
            model_version=current.model.version,
            source=source,
            exposure_logged=logged,
            themes=[theme_out(theme) for theme in ranked],
        )

    @app.post("/events", status_code=202, summary="Record a click or impression of a ranking")
    async def post_event(event: EventIn) -> EventOut:
        try:
            exposure = await store().call(lambda: ab_store().exposure(event.request_id))
            if exposure is None:
                raise HTTPException(
                    404, f"request_id: unknown or expired request {event.request_id!r}"
                )
            if event.theme_id not in exposure.theme_ids:
                raise HTTPException(
                    422,
                    f"theme_id: {event.theme_id!r} was not shown in request {event.request_id!r}",
                )
            position = exposure.theme_ids.index(event.theme_id)
            outcome = await store().call(
                lambda: ab_store().record_event(
                    event.event_id, event.request_id, event.type, exposure, position
                )
            )
        except StoreUnavailable as error:
            raise HTTPException(503, f"event not stored, retry later: {error}") from None
        status = {ACCEPTED: "accepted", DUPLICATE_EVENT: "duplicate"}.get(
            outcome, "already_counted"
        )
        return EventOut(event_id=event.event_id, status=status, arm=exposure.arm)

    async def experiment_report(name: str) -> dict[str, Any]:
        experiment = state.experiments.get(name)
        if experiment is None:
            raise HTTPException(
                404,
                f"experiment: unknown experiment {name!r} "
                f"(configured: {sorted(state.experiments)})",
            )
        arms = [arm.name for arm in experiment.arms]
        try:
            counts = await store().call(lambda: ab_store().counts(name, arms))
        except StoreUnavailable as error:
            raise HTTPException(503, f"report unavailable: {error}") from None
        return await run_in_threadpool(build_report, experiment, counts)

    @app.get("/experiments", summary="Configured experiments")
    async def experiments() -> dict[str, Any]:
        return {
            name: {
                "control": e.control,
                "arms": {a.name: {"weight": a.weight, "ranker": a.ranker} for a in e.arms},
            }
            for name, e in state.experiments.items()
        }

    @app.get("/experiments/{name}/report", summary="A/B report (JSON)")
    async def report_json(name: str) -> dict[str, Any]:
        return await experiment_report(name)

    @app.get("/experiments/{name}", response_class=HTMLResponse, summary="A/B report (HTML)")
    async def report_page(name: str) -> HTMLResponse:
        report = await experiment_report(name)
        return HTMLResponse(await run_in_threadpool(render_html, report))

    @app.put(
        "/users/{user_id}/features",
        dependencies=[Depends(require_admin)],
        summary="Store a user's features (admin)",
    )
    async def put_features(
        user_id: UserIdPath,
        features: Annotated[
            dict[str, Any],
            Body(
                description="per input of the model a list: hist_tags, hist_tags_w, ...",
                examples=[{"hist_tags": [3, 17], "hist_tags_w": [0.5, 0.5]}],
            ),
        ],
    ) -> FeaturesStored:
        model = serving().model
        try:
            record = model.spec.validate(features, where="body")
        except FeatureError as error:
            raise HTTPException(422, str(error)) from None
        try:
            await store().put_features(user_id, record)
            await store().drop_profile(model.version, user_id)
        except StoreUnavailable as error:
            raise HTTPException(
                503, f"feature store unavailable, nothing stored: {error}"
            ) from None
        return FeaturesStored(user_id=user_id, model_version=model.version, stored=True)

    @app.post(
        "/admin/reload",
        dependencies=[Depends(require_admin)],
        summary="Load a bundle and swap it in (admin)",
    )
    async def reload(request: ReloadRequest | None = None) -> ReloadResponse:
        path = (request.bundle if request else None) or settings.bundle
        async with state.reload_lock:
            previous = serving()
            try:
                model = await run_in_threadpool(state.load, path)
            except Exception as error:  # any failure keeps the old model serving
                metrics.reloads.labels("failed").inc()
                raise HTTPException(
                    422, f"bundle: reload failed, still serving {previous.model.version}: {error}"
                ) from None
            state.serving = state.serve(model)
            metrics.reloads.labels("ok").inc()
            await previous.batcher.close()
        return ReloadResponse(
            model_version=model.version,
            previous_version=previous.model.version,
            provider=model.runtime.provider,
        )

    @app.get("/healthz", summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: model, provider, Redis")
    async def readyz() -> JSONResponse:
        redis_up = await state.store.ping() if state.store is not None else False
        current = state.serving
        model = current.model if current else None
        ready = Readiness(
            status="ready" if model and redis_up else ("degraded" if model else "not ready"),
            model_version=model.version if model else None,
            model_name=model.bundle.manifest.model_name if model else None,
            provider=model.runtime.provider if model else None,
            redis="up" if redis_up else "down",
            themes=len(model.catalogue) if model and model.catalogue else 0,
            details={
                "micro_batching": bool(current and current.batcher.enabled),
                "theme_index_on_gpu": bool(model and model.catalogue and model.catalogue.on_gpu),
            },
        )
        return JSONResponse(ready.model_dump(), status_code=200 if model else 503)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    async def root() -> dict[str, Any]:
        current = state.serving
        return {
            "service": "tagprofile",
            "model_version": current.model.version if current else None,
            "docs": "/docs",
            "endpoints": ["/users/{user_id}/tags?k=5", "/themes/rank", "/readyz", "/metrics"],
        }

    return app
