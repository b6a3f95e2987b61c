"""The HTTP server: uvicorn (h11) with a deadline on every request head.

uvicorn arms no timer while a connection sends its request line and headers, and any byte
cancels its keep-alive timer, so a client that sends a partial head (a byte now and then)
holds a connection and its memory forever. :func:`server_config` uses an h11 protocol
that closes a connection whose head is not complete ``header_timeout_s`` after the
connection opened or the previous response ended. Idle keep-alive connections close
after ``keep_alive_s``. In production, a reverse proxy in front (README "Security")
also bounds slow bodies, connection counts and TLS.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from service.settings import Settings


class HeadDeadlineProtocol(H11Protocol):
    """h11 protocol closing connections whose request head takes too long."""

    header_timeout_s: float = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_deadline()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._head_received()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_head_deadline()
            self._head_received()  # a pipelined request may be parsed already

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_deadline()
        super().connection_lost(exc)

    def _head_received(self) -> None:
        if self.conn.their_state is not h11.IDLE:
            self._cancel_head_deadline()

    def _arm_head_deadline(self) -> None:
        self._cancel_head_deadline()
        self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timed_out)

    def _cancel_head_deadline(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def protocol_with(header_timeout_s: float) -> type[HeadDeadlineProtocol]:
    """The protocol class for one deadline (uvicorn instantiates the class it is given)."""
    return type(
        "HeadDeadlineProtocol", (HeadDeadlineProtocol,), {"header_timeout_s": header_timeout_s}
    )


def server_config(app: Any, settings: Settings, **overrides: Any) -> uvicorn.Config:
    """uvicorn's configuration for ``app`` under ``settings``."""
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "http": protocol_with(settings.header_timeout_s),
        "timeout_keep_alive": settings.keep_alive_s,
        "access_log": False,
        "backlog": 4096,  # a burst of 1,000+ connections must not overflow the accept queue
        **overrides,
    }
    return uvicorn.Config(app, **options)


def run(app: Any, settings: Settings) -> None:
    """Serve ``app`` until interrupted (uvicorn re-raises the SIGINT it shut down on)."""
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.Server(server_config(app, settings)).run()
