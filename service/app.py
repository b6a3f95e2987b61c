"""``create_app``: the FastAPI application of the service.

Its lifespan owns every resource (:class:`~service.state.ServiceState`: the models, Redis,
the A/B log); the routes live in :mod:`service.api.routes`, one ``APIRouter`` per
resource, and reach those resources through the typed dependencies of
:mod:`service.api.deps`. Every error answer goes through the handlers of
:mod:`service.api.errors` (one error model), every request body through the limit of
:mod:`service.api.limits`, and the OpenAPI document through :mod:`service.api.openapi`.
"""

import gc
from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager
from functools import partial

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException

from service.api import (
    ROUTERS,
    BodyLimit,
    build_openapi,
    http_error,
    server_error,
    validation_error,
)
from service.metrics import RequestTimer
from service.settings import Settings
from service.state import ServiceState


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Start the app's resources before the first request, release them after the last."""
    state: ServiceState = app.state.tagprofile
    with ExitStack() as stack:
        await state.start(stack)
        # start-up made ~135k long-lived objects (FastAPI, pydantic, numpy, the model):
        # keep them out of every later full collection (p99 117 -> 22 ms, RESULTS.md)
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await state.stop()


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app for ``settings`` (default: the ``TAGPROFILE_*`` environment)."""
    state = ServiceState(settings or Settings())
    # /docs and /redoc load Swagger UI and ReDoc from the fastapi-offline package, not a
    # CDN (FastAPI's self-hosting recipe): they work on a machine without network
    app = FastAPIOffline(
        title="tagprofile",
        summary="User–tag preference profiles and theme ranking (CTMVM, onnxruntime, Redis)",
        lifespan=lifespan,
    )
    app.state.tagprofile = state
    app.openapi = partial(build_openapi, app)
    # the last added runs first: time everything, including the 413s of the body limit
    app.add_middleware(BodyLimit, max_bytes=state.settings.max_body_bytes)
    app.add_middleware(RequestTimer, metrics=state.metrics)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, server_error)
    for router in ROUTERS:
        app.include_router(router)
    return app
