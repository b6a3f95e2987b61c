"""The FastAPI application: user tag profiles, theme ranking, admin, health and metrics.

``create_app(settings)`` builds an app whose lifespan owns every resource: the model
(onnxruntime session, feature spec, theme index), the Redis client (an embedded
redis-server when no URL is configured) and the micro-batcher. Handlers reach the model
through one reference, swapped atomically by ``POST /admin/reload``.
"""

import asyncio
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
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.batching import MicroBatcher
from service.features import FeatureError
from service.keys import USER_ID_PATTERN, Keys
from service.metrics import RequestTimer, ServiceMetrics
from service.model import LoadedModel, load_model
from service.profiles import ProfileFormatError
from service.redis_conn import redis_url
from service.schemas import (
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
from service.settings import Settings
from service.store import RedisStore, StoreUnavailable

JSON = "application/json"
INLINE_RANK_THEMES = 5000
"""Catalogues up to this size are ranked on the event loop (microseconds); larger ones in
a worker thread."""


@dataclass(frozen=True)
class Serving:
    """The model serving now and its batcher: swapped together, never mixed."""

    model: LoadedModel
    batcher: MicroBatcher[dict[str, Any]]


class ServiceState:
    """The app's lifespan-managed resources."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        self.metrics = ServiceMetrics()
        self.store: RedisStore | None = None
        self.serving: Serving | None = None
        self.reload_lock = asyncio.Lock()

    def load(self, path: Any) -> LoadedModel:
        s = self.settings
        return load_model(path, device=s.device, max_k=s.max_k, intra_op_threads=s.intra_op_threads)

    def serve(self, model: LoadedModel) -> Serving:
        batcher = MicroBatcher(
            model.score,
            max_batch=self.settings.max_batch,
            max_wait_s=self.settings.batch_wait_ms / 1000,
            observe=self.metrics.observe_batch,
        )
        self.metrics.set_model(model.version, model.runtime.provider)
        return Serving(model, batcher)

    async def user_scores(self, serving: Serving, user_id: str) -> tuple[np.ndarray | None, str]:
        """(all-tag scores, "model") for a user with usable features, else (None, "popular")."""
        assert self.store is not None
        try:
            record = await self.store.get_features(user_id)
        except StoreUnavailable:
            record = None
        if record is None or not serving.model.spec.fits(record):
            return None, "popular"
        return await serving.batcher.submit(record), "model"


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
            state.serving = state.serve(model)
            try:
                yield
            finally:
                await state.serving.batcher.close()
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
        scores, source = await state.user_scores(current, user_id)
        metrics.profile_source.labels(source).inc()
        if scores is None:
            body = model.codec.response(
                user_id, model.cold_start_blob, k, cached=False, source=source
            )
            return Response(body, media_type=JSON)
        blob = model.profile_blob(scores)
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

    @app.post("/themes/rank", summary="Rank themes for a user")
    async def rank_themes(request: RankRequest) -> RankResponse:
        current = serving()
        model = current.model
        catalogue = model.catalogue
        if catalogue is None:
            raise HTTPException(404, "this model bundle has no theme catalogue (themes.json)")
        if request.experiment is not None:
            raise HTTPException(
                422, f"experiment: unknown experiment {request.experiment!r} (none configured)"
            )
        if request.candidates is not None:
            if len(request.candidates) > settings.max_candidates:
                raise HTTPException(422, f"candidates: at most {settings.max_candidates} theme ids")
            unknown = catalogue.unknown(request.candidates)
            if unknown:
                raise HTTPException(422, f"candidates: unknown theme ids {unknown}")
        scores, source = await state.user_scores(current, request.user_id)
        if scores is None:
            scores = model.cold_start_scores
        metrics.profile_source.labels(source).inc()
        if len(catalogue) <= INLINE_RANK_THEMES:
            ranked = catalogue.rank(scores, request.k, request.candidates)
        else:
            ranked = await run_in_threadpool(catalogue.rank, scores, request.k, request.candidates)
        return RankResponse(
            request_id=uuid.uuid4().hex,
            user_id=request.user_id,
            arm=None,
            model_version=model.version,
            source=source,
            themes=[
                RankedThemeOut(
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
                for theme in ranked
            ],
        )

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
