"""``deploy/abtest_local.py``'s API start-up: a free port, retried when another process
takes it first (parallel test workers do), and a clear error otherwise."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import httpx
import pytest

from deploy import abtest_local
from service.store.embedded import free_port

READY_SERVER = """
import http.server, sys

class Ready(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"status": "ready"}')

http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Ready).serve_forever()
"""


def test_a_port_taken_before_the_api_binds_it_is_retried(tmp_path: Path, monkeypatch) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        ports = iter([taken.getsockname()[1], free_port()])
        monkeypatch.setattr(abtest_local, "free_port", lambda: next(ports))
        log = tmp_path / "api.log"
        process, base, ready = abtest_local.start_api(
            lambda port: [sys.executable, "-c", READY_SERVER, str(port)], log, env={}
        )
        try:
            assert ready == {"status": "ready"}
            assert base != f"http://127.0.0.1:{taken.getsockname()[1]}"
            assert httpx.get(f"{base}/readyz").status_code == 200
        finally:
            process.kill()
            process.wait()
    assert "address already in use" in log.read_text().lower()  # the first try's error


def test_an_api_that_fails_otherwise_is_reported_with_its_output(tmp_path: Path) -> None:
    command = [sys.executable, "-c", "raise SystemExit('bundle not found: /nowhere')"]
    with pytest.raises(RuntimeError, match="bundle not found: /nowhere") as error:
        abtest_local.start_api(lambda port: command, tmp_path / "api.log", env={})
    assert "api.log" in str(error.value)
