"""The embedded Redis is kept running: a crashed server comes back within seconds on its
port with its data; a marker left behind by a killed process is used only when the
server it names is still the one answering."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import redis

from service.store.connection import URL_FILE, read_marker, redis_endpoint
from service.store.embedded import EmbeddedRedis


def wait_for(condition, timeout: float = 10.0) -> float:
    """Seconds until ``condition()`` held (AssertionError after ``timeout``)."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)
    return time.monotonic() - start


def answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.2).ping())
    except redis.RedisError:
        return False


def test_a_crashed_embedded_redis_is_restarted_with_its_data(tmp_path: Path):
    with redis_endpoint(None, tmp_path / "data") as endpoint:
        client = redis.Redis.from_url(endpoint.url)
        client.set("acknowledged", "yes")
        _, _, pid = read_marker(tmp_path / "data")
        supervisor = endpoint.supervisor
        assert supervisor is not None
        os.kill(pid, signal.SIGKILL)
        seconds = wait_for(lambda: supervisor.restarts == 1 and answers(endpoint.url))
        assert seconds < 5
        assert client.get("acknowledged") == b"yes"  # its AOF, its port
        _, _, new_pid = read_marker(tmp_path / "data")
        assert new_pid != pid and new_pid == supervisor.server.pid
    assert not (tmp_path / "data" / URL_FILE).exists()


@pytest.mark.parametrize("identity", ["", "run_id=0123abcd pid=999999\n"])
def test_a_stale_marker_is_not_trusted_with_a_foreign_redis(tmp_path: Path, identity: str):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with EmbeddedRedis(tmp_path / "foreign", persistence=False) as foreign:
        # an API killed with -9 left its marker (without or with a server identity);
        # its port now belongs to another Redis
        (data_dir / URL_FILE).write_text(f"{foreign.url}\n{identity}")
        with redis_endpoint(None, data_dir) as endpoint:
            assert endpoint.url != foreign.url and endpoint.supervisor is not None
            redis.Redis.from_url(endpoint.url).set("tp:ab:x", "1")
        assert redis.Redis.from_url(foreign.url).dbsize() == 0


def test_a_live_marker_is_shared_by_a_second_process(tmp_path: Path):
    with redis_endpoint(None, tmp_path / "data") as owner:
        with redis_endpoint(None, tmp_path / "data") as guest:
            assert guest.url == owner.url and guest.supervisor is None
        assert answers(owner.url)  # the guest leaving does not stop the owner's server
