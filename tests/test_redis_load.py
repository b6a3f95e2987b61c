"""Load is not an outage: 1,000 concurrent requests through a pool of a few Redis
connections wait their turn, every exposure is logged and every event stored; a Redis
restart does not fail the first burst on the pool's stale connections."""

from __future__ import annotations

import asyncio
import re

import httpx
import redis

from service.store.embedded import EmbeddedRedis
from tests.loopback import Answer, concurrently
from tests.service_helpers import make_settings, served, users, write_experiments

CLIENTS = 1000


def counter(metrics: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in metrics.splitlines():
        ours = line.startswith((name + "{", name + " "))
        if ours and all(f'{key}="{value}"' in line for key, value in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def rank_all(base: str, user_ids: list[str]) -> list[Answer]:
    body = {"k": 3, "experiment": "themes"}
    calls = [("POST", "/themes/rank", {**body, "user_id": u}) for u in user_ids]
    return asyncio.run(concurrently(base, calls))


def click_all(base: str, rankings: list[dict]) -> list[Answer]:
    calls = [
        (
            "POST",
            "/events",
            {
                "event_id": f"click-{r['request_id']}",
                "request_id": r["request_id"],
                "type": "click",
                "theme_id": r["themes"][0]["theme_id"],
            },
        )
        for r in rankings
    ]
    return asyncio.run(concurrently(base, calls))


def test_a_thousand_concurrent_clients_lose_no_exposure_and_no_event(
    service_bundle, redis_server, tmp_path
):
    settings = make_settings(
        service_bundle,
        redis_server.url,
        experiments=write_experiments(tmp_path / "experiments.yaml"),
        redis_max_connections=16,  # 1,000 requests queue for 16 connections
    )
    known = [r["user_id"] for r in users(service_bundle)]
    user_ids = [known[i % len(known)] if i % 2 else f"new-{i}" for i in range(CLIENTS)]
    with served(settings) as base:
        ranked = rank_all(base, user_ids)
        assert [r.status for r in ranked] == [200] * CLIENTS
        rankings = [r.json() for r in ranked]
        assert sum(not r["exposure_logged"] for r in rankings) == 0
        clicked = click_all(base, rankings)
        assert [r.status for r in clicked] == [202] * CLIENTS
        assert {r.json()["status"] for r in clicked} == {"accepted"}
        metrics = httpx.get(f"{base}/metrics").text
        report = httpx.get(f"{base}/experiments/themes/report").json()
    assert counter(metrics, "tagprofile_ab_exposures_total", logged="false") == 0
    assert counter(metrics, "tagprofile_ab_exposures_total", logged="true") == CLIENTS
    assert "tagprofile_redis_up 1.0" in metrics
    assert sum(arm["clicks"] for arm in report["arms"].values()) == CLIENTS
    assert sum(arm["impressions"] for arm in report["arms"].values()) == 3 * CLIENTS


def test_the_first_burst_after_a_redis_restart_is_stored(service_bundle, tmp_path):
    with EmbeddedRedis(tmp_path / "redis", persistence=True) as server:
        settings = make_settings(
            service_bundle, server.url, experiments=write_experiments(tmp_path / "e.yaml")
        )
        user_ids = [r["user_id"] for r in users(service_bundle)[:60]]
        with served(settings) as base:
            warm = rank_all(base, user_ids)  # opens up to 60 pooled connections
            assert all(r.json()["exposure_logged"] for r in warm)
            server.restart()  # every pooled connection is now stale
            assert redis.Redis.from_url(server.url).ping()
            burst = rank_all(base, user_ids[:58])
            logged = [r.json()["exposure_logged"] for r in burst]
            metrics = httpx.get(f"{base}/metrics").text
        assert logged == [True] * 58, f"{logged.count(False)} of 58 exposures unlogged"
        assert re.search(r"^tagprofile_redis_up 1\.0$", metrics, re.M)
