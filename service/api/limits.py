"""The request-body limit: 413 before a body is parsed (or even read).

A declared ``Content-Length`` above the limit is refused at once, without reading a byte;
a chunked body is counted as it streams in and refused as soon as it passes the limit.
Either way nothing larger than the limit is ever buffered, so an unauthenticated client
cannot grow the process by sending big bodies. Starlette ships a body-limit middleware,
but it answers some of its 413s in plain text; this one answers in the API's error model.
"""

from __future__ import annotations

from typing import Any

from service.api.errors import ApiError, error_body

Scope = dict[str, Any]


def too_large(limit: int) -> ApiError:
    return ApiError(413, "body", f"larger than the limit of {limit} bytes")


def declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class BodyLimit:
    """Pure ASGI middleware enforcing ``max_bytes`` on every HTTP request body."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        declared = declared_length(scope)
        if declared is not None and declared > limit:
            await self._refuse(scope, send, limit)
            return
        received = 0

        async def counted() -> dict[str, Any]:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise too_large(limit)  # a FastAPI HTTPException: answered by the handler
            return message

        await self.app(scope, counted, send)

    @staticmethod
    async def _refuse(scope: Scope, send: Any, limit: int) -> None:
        error = too_large(limit)
        response = error_body(
            413, [{"field": "body", "message": error.message, "type": error.kind}]
        )
        response.headers["connection"] = "close"  # the unread body is not drained
        await response(scope, _no_body, send)


async def _no_body() -> dict[str, Any]:
    return {"type": "http.disconnect"}
