"""Typed dependencies: what a route needs, read from the state the lifespan put on
``app.state`` (:class:`~service.state.ServiceState`).

A route declares ``profiles: ProfilesDep`` instead of closing over the app's locals, so
each router module stands alone and its handlers say what they use. FastAPI spends about
10 µs on each dependency of a request (a cache hit costs ~200 µs in all), so each reads
``app.state`` directly instead of going through another, they come by concern rather than
one per object, and the hot routes take one to three. All are ``async``: a plain ``def``
would add a thread-pool hop.
"""

import secrets
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.api.errors import ApiError
from service.metrics import ServiceMetrics
from service.model import Profiles
from service.settings import Settings
from service.state import ABTesting, ServiceState


def _state(request: Request) -> ServiceState:
    return request.app.state.tagprofile


async def get_state(request: Request) -> ServiceState:
    """The whole state, for the routes that report on it (readiness) or change it."""
    return _state(request)


async def get_settings(request: Request) -> Settings:
    return _state(request).settings


async def get_metrics(request: Request) -> ServiceMetrics:
    return _state(request).metrics


async def get_profiles(request: Request) -> Profiles:
    """The profile path of the model serving now, read once per request (a reload swaps
    it atomically, so a request never mixes two models)."""
    profiles = _state(request).profiles
    if profiles is None:
        raise ApiError(503, "model", "no model loaded yet")
    return profiles


async def get_ab(request: Request) -> ABTesting:
    ab = _state(request).ab
    assert ab is not None, "the lifespan opens the A/B log before the first request"
    return ab


StateDep = Annotated[ServiceState, Depends(get_state)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[ServiceMetrics, Depends(get_metrics)]
ProfilesDep = Annotated[Profiles, Depends(get_profiles)]
ABDep = Annotated[ABTesting, Depends(get_ab)]


def check_admin(settings: Settings, authorization: str | None) -> None:
    """403 while no admin token is configured; 401 unless ``Bearer <token>`` matches."""
    token = settings.admin_token
    if token is None:
        raise ApiError(
            403, "authorization", "admin endpoints are disabled: set TAGPROFILE_ADMIN_TOKEN"
        )
    expected = f"Bearer {token.get_secret_value()}".encode()
    if authorization is None or not secrets.compare_digest(authorization.encode(), expected):
        raise ApiError(
            401,
            "authorization",
            "expected header 'Authorization: Bearer <admin token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )


class AdminRoute(APIRoute):
    """A route that authenticates before anything else: FastAPI reads and parses a body
    before it solves dependencies, so a dependency alone would let an unauthenticated
    client make the server buffer and parse whatever it sends."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()

        async def authenticated(request: Request) -> Response:
            check_admin(_state(request).settings, request.headers.get("authorization"))
            return await handler(request)

        return authenticated


bearer = HTTPBearer(auto_error=False, description="TAGPROFILE_ADMIN_TOKEN")


async def require_admin(
    request: Request,
    _: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    """The admin check again (:class:`AdminRoute` did it first); declares the bearer
    scheme in the OpenAPI document."""
    check_admin(_state(request).settings, request.headers.get("authorization"))
