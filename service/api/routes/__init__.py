"""One ``APIRouter`` per resource. :data:`ROUTERS` lists them in the order of the OpenAPI
docs, the profile route first: FastAPI matches included routers one by one, so the hot
path is tried first, and the app includes each directly (a router of routers costs every
request a second round of matching, ~20-60 µs)."""

from fastapi import APIRouter

from service.api.routes import admin, events, experiments, health, profiles, themes

ROUTERS: tuple[APIRouter, ...] = tuple(
    resource.router for resource in (profiles, themes, events, experiments, admin, health)
)

__all__ = ["ROUTERS"]
