"""Liveness, readiness, Prometheus metrics and the service's index (``/``)."""

import os
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from service.api.deps import MetricsDep, StateDep
from service.api.schemas import Readiness

router = APIRouter()


@router.get("/healthz", summary="Liveness")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: model, provider, Redis",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "no model loaded yet"}},
)
async def readyz(state: StateDep) -> JSONResponse:
    # 503 until a model is loaded; "degraded" (still 200) while Redis is down or events
    # are refused for want of durability
    store = state.store
    redis_up = await store.ping() if store is not None else False
    persistence = await store.refresh_persistence() if store is not None and redis_up else None
    refused = await state.ab.refusal() if state.ab is not None else None
    current = state.serving
    model = current.model if current else None
    healthy = redis_up and refused is None
    ready = Readiness(
        status="ready" if model and healthy else ("degraded" if model else "not ready"),
        model_version=model.version if model else None,
        model_name=model.bundle.manifest.model_name if model else None,
        provider=model.runtime.provider if model else None,
        redis="up" if redis_up else "down",
        themes=len(model.catalogue) if model and model.catalogue else 0,
        persistence=persistence.describe() if persistence is not None else None,
        events_refused=refused,
        details={
            "micro_batching": bool(current and current.batcher.enabled),
            "theme_index_on_gpu": bool(model and model.catalogue and model.catalogue.on_gpu),
            "redis_server": state.endpoint.describe() if state.endpoint else None,
            "worker_pid": os.getpid(),
        },
    )
    return JSONResponse(ready.model_dump(), status_code=200 if model else 503)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def prometheus(metrics: MetricsDep) -> Response:
    return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


@router.get("/", include_in_schema=False)
async def root(state: StateDep) -> dict[str, Any]:
    current = state.serving
    return {
        "service": "tagprofile",
        "model_version": current.model.version if current else None,
        "docs": "/docs",
        "endpoints": ["/users/{user_id}/tags?k=5", "/themes/rank", "/readyz", "/metrics"],
    }
