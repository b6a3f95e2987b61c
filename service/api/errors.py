"""One error model for every 4xx/5xx answer (DESIGN §10 "Errors"), documented in OpenAPI.

Every error body is an :class:`ErrorResponse`: ``detail`` reads ``field: message`` (what
a person reads) and ``errors`` lists the same problems with their ``field`` (what a client
branches on). Handlers raise :class:`ApiError` naming the field; the exception handlers
below turn pydantic's validation errors, Starlette's own HTTP errors (404 for an unknown
path, 405, the 413 of the body limit, FastAPI's 400 for an undecodable body) and any
unexpected exception into the same shape, so no answer leaves the documented schema.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("service.api")

ERROR_TYPES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    410: "gone",
    413: "too_large",
    422: "invalid",
    500: "internal",
    503: "unavailable",
}

DESCRIPTIONS = {
    400: "the body could not be decoded (not UTF-8 JSON)",
    401: "missing or wrong `Authorization: Bearer <admin token>`",
    403: "admin endpoints are disabled (no admin token configured) or the path is not allowed",
    404: "unknown resource (user path, request id, experiment, theme catalogue)",
    409: "conflicts with what is stored (event id reused with another payload, model version)",
    410: "the request's experiment is no longer configured, or ran under another configuration",
    413: "the request body is larger than TAGPROFILE_MAX_BODY_BYTES",
    422: "a field is invalid; `errors[].field` names it",
    503: "Redis (or the model) is unavailable: nothing was stored, retry later",
}

# where a Starlette/FastAPI error that names no field comes from
_DEFAULT_FIELD = {400: "body", 404: "path", 405: "method", 413: "body"}


class FieldError(BaseModel):
    field: str = Field(description="the offending input: `query.k`, `user_id`, `body`, `path`…")
    message: str
    type: str = Field(description="machine-readable kind: `invalid`, `not_found`, `conflict`…")


class ErrorResponse(BaseModel):
    """The body of every error answer."""

    detail: str = Field(description="`field: message`, problems joined by `; `")
    errors: list[FieldError] = Field(description="each problem with the field it concerns")


class ApiError(HTTPException):
    """An error answer about one field (``detail`` becomes ``field: message``). A FastAPI
    ``HTTPException``, so one raised while FastAPI reads a body passes through unchanged."""

    def __init__(
        self,
        status_code: int,
        field: str,
        message: str,
        *,
        kind: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status_code, f"{field}: {message}", headers)
        self.field = field
        self.message = message
        self.kind = kind or ERROR_TYPES.get(status_code, "error")


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` documenting ``codes`` with the error model."""
    return {
        code: {"model": ErrorResponse, "description": DESCRIPTIONS.get(code, "error")}
        for code in codes
    }


def error_body(status: int, errors: list[dict[str, str]]) -> JSONResponse:
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return JSONResponse({"detail": detail, "errors": errors}, status_code=status)


def _field_of(error: dict[str, Any]) -> str:
    if error.get("type") == "json_invalid":
        return "body"  # pydantic's loc holds the byte offset, not a field
    return ".".join(str(part) for part in error.get("loc", ()) if part != "body") or "body"


def _message_of(error: dict[str, Any]) -> str:
    if error.get("type") == "json_invalid":
        loc = error.get("loc", ())
        at = f" at byte {loc[1]}" if len(loc) > 1 else ""
        reason = (error.get("ctx") or {}).get("error", "")
        return f"invalid JSON{at}: {reason}".rstrip(": ")
    return str(error.get("msg"))


async def validation_error(_: Request, exc: Exception) -> JSONResponse:
    """422 whose ``detail`` names every bad field; ``errors`` keeps the structured list."""
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"field": _field_of(e), "message": _message_of(e), "type": "invalid"} for e in exc.errors()
    ]
    return error_body(422, errors)


async def http_error(_: Request, exc: Exception) -> JSONResponse:
    """Any HTTP error (ours or the framework's) in the error model, headers kept (``Allow``,
    ``WWW-Authenticate``)."""
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    if isinstance(exc, ApiError):
        field, message, kind = exc.field, exc.message, exc.kind
    else:
        field = _DEFAULT_FIELD.get(status, "request")
        message = {
            400: "could not be decoded: send UTF-8 JSON",
            404: "no such endpoint",
            413: "request body too large",
        }.get(status, str(exc.detail))
        kind = ERROR_TYPES.get(status, "error")
    response = error_body(status, [{"field": field, "message": message, "type": kind}])
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def server_error(request: Request, exc: Exception) -> JSONResponse:
    """An unexpected exception: 500 in the error model (the traceback goes to the log)."""
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_body(500, [{"field": "request", "message": "internal error", "type": "internal"}])
