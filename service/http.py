"""The HTTP server: uvicorn (h11) with a deadline on every request head, in one process
or as ``workers`` processes sharing one listening socket.

uvicorn arms no timer while a connection sends its request line and headers, and any byte
cancels its keep-alive timer, so a client that sends a partial head (a byte now and then)
holds a connection and its memory forever. :func:`server_config` uses an h11 protocol
that closes a connection whose head is not complete ``header_timeout_s`` after the
connection opened or the previous response ended. Idle keep-alive connections close
after ``keep_alive_s``. In production, a reverse proxy in front (README "Security")
also bounds slow bodies, connection counts and TLS.

Every accepted connection gets ``TCP_NODELAY``. asyncio sets it only on sockets whose
protocol number says TCP, and the listening socket uvicorn binds for its worker processes
has protocol 0, so without this every worker answer waited for the peer's delayed ACK
(~40 ms per request on one keep-alive connection: 2 workers served 0.18x one worker).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.supervisors import Multiprocess

from service.settings import Settings


class ServerConfig(uvicorn.Config):
    """uvicorn's configuration plus the head deadline; a module-level class, so it pickles
    into the worker processes with everything the protocol needs."""

    def __init__(self, app: Any, *, header_timeout_s: float = 10.0, **options: Any) -> None:
        super().__init__(app, **options)
        self.header_timeout_s = header_timeout_s


def set_nodelay(transport: asyncio.BaseTransport) -> None:
    """Send small answers at once (see the module docstring)."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class HeadDeadlineProtocol(H11Protocol):
    """h11 protocol closing connections whose request head takes too long."""

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.header_timeout_s: float = getattr(config, "header_timeout_s", 10.0)
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        set_nodelay(transport)
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


def server_config(app: Any, settings: Settings, **overrides: Any) -> ServerConfig:
    """uvicorn's configuration for ``app`` under ``settings``."""
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "http": HeadDeadlineProtocol,
        "header_timeout_s": settings.header_timeout_s,
        "timeout_keep_alive": settings.keep_alive_s,
        "access_log": False,
        "backlog": 4096,  # a burst of 1,000+ connections must not overflow the accept queue
        **overrides,
    }
    return ServerConfig(app, **options)


APP_FACTORY = "service.app:create_app"
"""What each worker process imports and calls: the app of the ``TAGPROFILE_*`` environment."""


def run(app: Any, settings: Settings) -> None:
    """Serve ``app`` until interrupted (uvicorn re-raises the SIGINT it shut down on)."""
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.Server(server_config(app, settings)).run()


def run_workers(settings: Settings) -> None:
    """Serve with ``settings.workers`` processes on one socket (uvicorn's supervisor
    restarts a worker that dies). Each builds its app from the environment, so the caller
    exports the settings there first (:func:`service.workers.export_settings`)."""
    config = server_config(APP_FACTORY, settings, factory=True, workers=settings.workers)
    with contextlib.suppress(KeyboardInterrupt):
        Multiprocess(config, sockets=[config.bind_socket()]).run()
