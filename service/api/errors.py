"""Client errors that name the field: pydantic's validation errors as a 422 whose
``detail`` reads ``query.k: ...``, like the ``HTTPException`` details of the handlers."""

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse


def _field_of(error: dict[str, Any]) -> str:
    return ".".join(str(part) for part in error.get("loc", ()) if part != "body") or "body"


async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    """422 whose ``detail`` names every bad field; ``errors`` keeps the structured list."""
    errors = [
        {"field": _field_of(e), "message": e.get("msg"), "type": e.get("type")}
        for e in exc.errors()
    ]
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return JSONResponse({"detail": detail, "errors": errors}, status_code=422)
