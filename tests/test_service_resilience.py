"""Redis failures degrade the service, never crash it; micro-batching under concurrency;
the embedded Redis of the app's lifespan."""

from __future__ import annotations

import asyncio
import re

import httpx
import numpy as np
import redis

from service.app import create_app
from service.store.connection import URL_FILE
from service.store.embedded import EmbeddedRedis
from tests.service_helpers import (
    ADMIN,
    client_for,
    load_users_into,
    make_settings,
    reference_scores,
    users,
)


def test_redis_outage_keeps_answering_and_recovers_by_itself(service_bundle, tmp_path):
    known, stranger = (r["user_id"] for r in users(service_bundle)[:2])
    with EmbeddedRedis(tmp_path / "redis", persistence=True) as server:
        settings = make_settings(service_bundle, server.url, redis_retry_s=0.2, redis_timeout_s=0.3)
        with client_for(settings) as client:
            assert client.get(f"/users/{known}/tags").json()["cached"] is False
            expected = client.get(f"/users/{known}/tags").json()
            assert expected["cached"] is True

            server.stop()
            during = client.get(f"/users/{known}/tags")
            assert during.status_code == 200
            body = during.json()
            assert body["cached"] is False and body["source"] == "memory"  # from memory
            assert body["tags"] == expected["tags"]
            cold = client.get(f"/users/{stranger}/tags").json()
            assert cold["source"] == "fallback" and cold["cached"] is False
            assert client.post("/themes/rank", json={"user_id": known}).status_code == 200
            ready = client.get("/readyz")
            assert ready.status_code == 200
            assert ready.json()["status"] == "degraded" and ready.json()["redis"] == "down"
            put = client.put(f"/users/{known}/features", json={"hist_tags": [1]}, headers=ADMIN)
            assert put.status_code == 503 and "nothing stored" in put.json()["detail"]
            assert "tagprofile_redis_up 0.0" in client.get("/metrics").text
            assert 'tagprofile_profile_cache_total{result="error"}' in client.get("/metrics").text

            server.start()  # same port, same data
            assert client.get("/readyz").json()["status"] == "ready"
            back = client.get(f"/users/{known}/tags").json()
            assert back["cached"] is True and back["tags"] == expected["tags"]
            assert client.get(f"/users/{stranger}/tags").json()["source"] == "model"
            assert "tagprofile_redis_up 1.0" in client.get("/metrics").text


def test_concurrent_cache_misses_are_micro_batched(service_bundle, redis_server):
    settings = make_settings(service_bundle, redis_server.url, batch_wait_ms=20, max_batch=16)
    load_users_into(settings)
    records = users(service_bundle)[:40]
    app = create_app(settings)

    async def burst() -> tuple[list[dict], str]:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://service") as http:
                responses = await asyncio.gather(
                    *(http.get(f"/users/{r['user_id']}/tags", params={"k": 3}) for r in records)
                )
                metrics = (await http.get("/metrics")).text
        return [r.json() for r in responses], metrics

    bodies, metrics = asyncio.run(burst())
    for record, body in zip(records, bodies, strict=True):
        scores = reference_scores(service_bundle, record["features"])
        assert body["source"] == "model" and body["user_id"] == record["user_id"]
        top = sorted(range(len(scores)), key=lambda t: (-scores[t], t))[:3]
        assert [t["tag_id"] for t in body["tags"]] == top
        assert np.allclose([t["score"] for t in body["tags"]], scores[top], atol=1e-5)
    runs = float(re.search(r"tagprofile_model_batch_size_count (\S+)", metrics).group(1))
    batched = float(re.search(r"tagprofile_model_batch_size_sum (\S+)", metrics).group(1))
    assert batched == 40  # every miss went through the batcher, once
    assert runs <= 20, f"{runs} model runs for 40 concurrent misses: not batched"
    assert 'tagprofile_model_batch_size_bucket{le="1.0"}' in metrics


def test_app_without_a_redis_url_runs_an_embedded_redis_and_stops_it(service_bundle, tmp_path):
    data_dir = tmp_path / "embedded"
    settings = make_settings(service_bundle, None, redis_data_dir=data_dir)
    assert settings.redis_url is None
    with client_for(settings, load_users=False) as client:
        url = (data_dir / URL_FILE).read_text().splitlines()[0]
        assert redis.Redis.from_url(url).ping()
        assert client.get("/readyz").json()["redis"] == "up"
        user = "someone"
        client.put(f"/users/{user}/features", json={"hist_tags": [2, 3]}, headers=ADMIN)
        assert client.get(f"/users/{user}/tags").json()["source"] == "model"
    assert not (data_dir / URL_FILE).exists()
    try:
        redis.Redis.from_url(url, socket_connect_timeout=0.5).ping()
        raise AssertionError("embedded Redis still running after shutdown")
    except redis.ConnectionError:
        pass
    assert any(data_dir.glob("appendonly*")), "no persistence files in the data directory"


def test_during_an_outage_known_users_get_their_own_profile_marked(service_bundle, tmp_path):
    hit_only, ranked, unseen = (r["user_id"] for r in users(service_bundle)[:3])
    with EmbeddedRedis(tmp_path / "redis", persistence=True) as server:
        settings = make_settings(service_bundle, server.url, redis_retry_s=5, redis_timeout_s=0.3)
        with client_for(settings) as warm:  # another replica computed and cached it
            expected = warm.get(f"/users/{hit_only}/tags").json()
        with client_for(settings, load_users=False) as client:
            assert client.get(f"/users/{hit_only}/tags").json()["cached"] is True  # a hit
            ranking = client.post("/themes/rank", json={"user_id": ranked, "k": 3}).json()
            server.stop()
            during = client.get(f"/users/{hit_only}/tags").json()
            assert during["source"] == "memory" and during["tags"] == expected["tags"]
            assert during["cached"] is False
            again = client.post("/themes/rank", json={"user_id": ranked, "k": 3}).json()
            assert again["source"] == "memory" and again["themes"] == ranking["themes"]
            # a known user this replica never served: cold-start tags, but not "popular"
            assert client.get(f"/users/{unseen}/tags").json()["source"] == "fallback"
            assert client.get("/users/never-seen/tags").json()["source"] == "fallback"
            server.start()
