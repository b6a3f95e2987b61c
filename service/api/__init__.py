"""The HTTP layer: one ``APIRouter`` per resource (``routes/``), typed dependencies that
read the app's state (``deps``), request and response schemas, the one error model
(``errors``), the body limit (``limits``) and the OpenAPI document (``openapi``).

Route and dependency modules leave out ``from __future__ import annotations``: FastAPI
reads their annotations at run time.
"""

from service.api.errors import ErrorResponse, http_error, server_error, validation_error
from service.api.limits import BodyLimit
from service.api.openapi import build_openapi
from service.api.routes import ROUTERS

__all__ = [
    "ROUTERS",
    "BodyLimit",
    "ErrorResponse",
    "build_openapi",
    "http_error",
    "server_error",
    "validation_error",
]
