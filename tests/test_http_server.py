"""The HTTP server does not hold connections for clients that never finish a request:
a request head that does not complete in time, or an idle keep-alive connection, is
closed."""

from __future__ import annotations

import socket
import time

from tests.service_helpers import make_settings, served


def closed_after(sock: socket.socket, trickle: bytes, limit_s: float) -> float | None:
    """Send ``trickle`` a byte at a time, every 0.1 s, until the server closes the
    connection (its seconds) or ``limit_s`` passes (None)."""
    start = time.monotonic()
    sock.settimeout(0.1)
    for byte in (trickle[i : i + 1] for i in range(len(trickle))):
        if time.monotonic() - start > limit_s:
            return None
        try:
            sock.sendall(byte)
            if sock.recv(4096) == b"":
                return time.monotonic() - start
        except TimeoutError:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return time.monotonic() - start
    return None


def test_a_request_head_that_never_completes_is_cut_off(service_bundle, redis_server):
    settings = make_settings(
        service_bundle, redis_server.url, header_timeout_s=0.5, keep_alive_s=0.5
    )
    head = b"GET /healthz HTTP/1.1\r\nhost: x\r\n" + b"x-slow: " + b"a" * 200
    with served(settings, load_users=False) as base:
        host, port = base.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as slow:
            seconds = closed_after(slow, head, limit_s=5)
        assert seconds is not None and seconds < 3, "a partial head held the connection"
        with socket.create_connection((host, int(port))) as idle:  # after one answer, silence
            idle.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            idle.settimeout(5)
            assert idle.recv(4096).startswith(b"HTTP/1.1 200")
            seconds = closed_after(idle, b"G" * 100, limit_s=5)  # then a trickle of a head
        assert seconds is not None and seconds < 3
