"""The embedded Redis: a real redis-server started, stopped, restarted and shared, no mocks."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from service.store.embedded import EmbeddedRedis, RedisServerError, find_redis_server, free_port

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def client_for(server: EmbeddedRedis) -> redis.Redis:
    return redis.Redis.from_url(server.url, socket_timeout=2, decode_responses=True)


def refuses_connections(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True


def wait_until_refused(host: str, port: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if refuses_connections(host, port):
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    srv = EmbeddedRedis(tmp_path / "redis", persistence=False)
    try:
        yield srv.start()
    finally:
        srv.stop()


def test_find_redis_server_returns_an_executable_file():
    path = Path(find_redis_server())
    assert path.is_absolute()
    assert path.is_file()
    assert os.access(path, os.X_OK)
    version = subprocess.run([path, "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith("Redis server v=")


def test_start_ping_roundtrip_and_stop(tmp_path: Path):
    srv = EmbeddedRedis(tmp_path / "data", persistence=False)
    assert not srv.running
    assert srv.url == f"redis://127.0.0.1:{srv.port}/0"
    assert srv.start() is srv
    assert srv.running
    assert (tmp_path / "data" / "redis.log").is_file()
    client = client_for(srv)
    assert client.ping() is True
    assert client.set("user:1", "profile") is True
    assert client.get("user:1") == "profile"
    client.close()

    srv.stop()
    assert not srv.running
    assert refuses_connections(srv.host, srv.port)
    srv.stop()  # second stop is a no-op
    assert not srv.running


def test_start_twice_is_a_noop(server: EmbeddedRedis):
    pid = client_for(server).info("server")["process_id"]
    server.start()
    assert client_for(server).info("server")["process_id"] == pid


def test_stop_without_start_is_a_noop(tmp_path: Path):
    srv = EmbeddedRedis(tmp_path / "never")
    srv.stop()
    assert not srv.running
    assert not (tmp_path / "never").exists()


def test_context_manager_starts_and_stops(tmp_path: Path):
    with EmbeddedRedis(tmp_path, persistence=False) as srv:
        assert srv.running
        assert client_for(srv).ping() is True
        port = srv.port
    assert not srv.running
    assert refuses_connections("127.0.0.1", port)


def test_persistence_keeps_data_for_a_new_instance_on_the_same_dir(tmp_path: Path):
    data_dir = tmp_path / "persistent"
    with EmbeddedRedis(data_dir, persistence=True) as first:
        client = client_for(first)
        client.set("profile:42", "tags")
        client.hset("user:42", mapping={"a": "1", "b": "2"})
        client.close()
    assert (data_dir / "appendonly.aof").is_file()

    with EmbeddedRedis(data_dir, persistence=True) as second:
        client = client_for(second)
        assert client.get("profile:42") == "tags"
        assert client.hgetall("user:42") == {"a": "1", "b": "2"}
        client.close()


def test_without_persistence_data_is_gone_after_stop(tmp_path: Path):
    data_dir = tmp_path / "volatile"
    with EmbeddedRedis(data_dir, persistence=False) as first:
        client_for(first).set("profile:42", "tags")
    assert not (data_dir / "appendonly.aof").exists()
    assert not (data_dir / "dump.rdb").exists()

    with EmbeddedRedis(data_dir, persistence=False) as second:
        assert client_for(second).get("profile:42") is None
        assert client_for(second).dbsize() == 0


def test_restart_keeps_port_and_persistent_data(tmp_path: Path):
    with EmbeddedRedis(tmp_path, persistence=True) as srv:
        port, url = srv.port, srv.url
        client = client_for(srv)
        client.set("k", "v")
        pid = client.info("server")["process_id"]

        srv.restart()
        assert srv.running
        assert (srv.port, srv.url) == (port, url)
        # The same client object reconnects to the same address after the outage.
        assert client.get("k") == "v"
        assert client.info("server")["process_id"] != pid
        client.close()


def test_stop_then_start_is_an_outage_on_the_same_address(server: EmbeddedRedis):
    client = client_for(server)
    port = server.port
    server.stop()
    with pytest.raises(redis.ConnectionError):
        client.ping()
    server.start()
    assert server.port == port
    assert client.ping() is True
    client.close()


def test_missing_binary_raises_naming_it(tmp_path: Path):
    missing = tmp_path / "no-such-redis-server"
    srv = EmbeddedRedis(tmp_path / "data", binary=str(missing))
    with pytest.raises(RedisServerError, match="no-such-redis-server") as excinfo:
        srv.start()
    assert "does not exist or is not an executable" in str(excinfo.value)
    assert not srv.running


def test_non_executable_binary_raises(tmp_path: Path):
    not_executable = tmp_path / "redis-server"
    not_executable.write_text("not a program\n")
    not_executable.chmod(0o644)
    with pytest.raises(RedisServerError, match="not an executable"):
        EmbeddedRedis(tmp_path / "data", binary=str(not_executable)).start()


def test_binary_that_exits_at_once_raises_with_exit_code_and_log(tmp_path: Path):
    false = shutil.which("false")
    if false is None:
        pytest.skip("no 'false' program on PATH")
    srv = EmbeddedRedis(tmp_path / "data", binary=false, persistence=False)
    with pytest.raises(RedisServerError) as excinfo:
        srv.start()
    message = str(excinfo.value)
    assert "exited with code 1" in message
    assert str(Path(false).resolve()) in message
    assert f"127.0.0.1:{srv.port}" in message
    assert "redis.log" in message
    assert not srv.running


def test_explicit_port_held_by_another_redis_raises_port_in_use(
    server: EmbeddedRedis, tmp_path: Path
):
    intruder = EmbeddedRedis(tmp_path / "other", port=server.port, persistence=False)
    with pytest.raises(RedisServerError, match=f"port {server.port} .*already in use") as info:
        intruder.start()
    # The log tail quoted in the message is the server's own explanation.
    assert "Address already in use" in str(info.value)
    assert not intruder.running
    assert intruder.port == server.port  # an explicit port is never swapped
    assert client_for(server).ping() is True  # the first server is untouched


def test_explicit_port_held_by_a_plain_socket_raises(tmp_path: Path):
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        srv = EmbeddedRedis(tmp_path, port=port, persistence=False)
        with pytest.raises(RedisServerError, match="already in use"):
            srv.start()
        assert not srv.running


def test_automatic_port_taken_before_start_is_replaced(tmp_path: Path):
    srv = EmbeddedRedis(tmp_path, persistence=False)
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", srv.port))  # someone grabs the port in the meantime
        blocker.listen()
        taken = srv.port
        with srv:
            assert srv.port != taken
            assert client_for(srv).ping() is True


def test_two_servers_get_different_ports_and_separate_data(tmp_path: Path):
    with (
        EmbeddedRedis(tmp_path / "a", persistence=False) as a,
        EmbeddedRedis(tmp_path / "b", persistence=False) as b,
    ):
        assert a.port != b.port
        assert a.url != b.url
        client_for(a).set("only", "a")
        assert client_for(b).get("only") is None
        assert client_for(a).get("only") == "a"


def test_free_port_can_be_bound():
    port = free_port()
    assert 0 < port < 65536
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def _spawn_parent(tmp_path: Path, tail: str) -> tuple[subprocess.Popen[str], int]:
    """A child Python that starts a server, prints its port, then runs ``tail``."""
    code = (
        "import os, signal, sys, time\n"
        "from service.store.embedded import EmbeddedRedis\n"
        f"srv = EmbeddedRedis({str(tmp_path)!r}, persistence=False).start()\n"
        "print(srv.port, flush=True)\n"
        f"{tail}\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip().isdigit(), f"child did not report a port: {line!r}"
    return proc, int(line)


def test_server_is_stopped_when_the_starting_process_exits(tmp_path: Path):
    proc, port = _spawn_parent(tmp_path, "sys.exit(0)  # no stop(): the atexit hook must do it")
    assert proc.wait(timeout=10) == 0
    assert refuses_connections("127.0.0.1", port)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_server_dies_with_a_killed_parent(tmp_path: Path):
    proc, port = _spawn_parent(tmp_path, "time.sleep(60)")
    assert not refuses_connections("127.0.0.1", port)
    proc.send_signal(signal.SIGKILL)  # no atexit hook runs: only the kernel can help
    proc.wait(timeout=10)
    assert wait_until_refused("127.0.0.1", port)
