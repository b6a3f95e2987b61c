"""The service on a real Redis Cluster (3 masters, 1 replica each, Valkey 9 with AOF):
``load`` and ``precompute`` spread users over every master, the API serves and logs its
A/B test there with every multi-key write inside the experiment's hash slot, a burst
queues for connections, and neither a failover of the experiment's master nor a kill -9
and restart of it while events stream in loses an acknowledged event."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import redis
from redis.cluster import RedisCluster

from service.cli import main
from service.settings import Settings
from service.store.keys import ABKeys, Keys
from tests.loopback import concurrently
from tests.redis_cluster import LocalCluster
from tests.service_helpers import ADMIN, make_settings, served, users, write_experiments


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path_factory.mktemp("cluster")) as running:
        yield running


@pytest.fixture
def settings(cluster, service_bundle, tmp_path) -> Settings:
    return make_settings(
        service_bundle,
        cluster.url,
        redis_cluster=True,
        experiments=write_experiments(tmp_path / "experiments.yaml"),
    )


def keys_by_master(cluster: LocalCluster, pattern: str) -> dict[int, list[str]]:
    """Keys matching ``pattern`` on each master (by port), read node by node."""
    found: dict[int, list[str]] = {}
    for node in cluster.nodes:
        with cluster.client(node) as client:
            if client.info("replication")["role"] == "master":
                found[node.port] = list(client.scan_iter(match=pattern, count=1000))
    return found


def rank(base: str, user_id: str, **extra: object) -> dict:
    body = {"user_id": user_id, "k": 3, "experiment": "themes", **extra}
    answer = httpx.post(f"{base}/themes/rank", json=body, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


def click(base: str, ranking: dict, event_id: str, position: int = 0) -> httpx.Response:
    body = {
        "event_id": event_id,
        "request_id": ranking["request_id"],
        "type": "click",
        "theme_id": ranking["themes"][position]["theme_id"],
    }
    return httpx.post(f"{base}/events", json=body, timeout=10)


def reported_clicks(base: str) -> int:
    report = httpx.get(f"{base}/experiments/themes/report", timeout=10).json()
    return sum(arm["clicks"] for arm in report["arms"].values())


def test_cluster_mode_needs_a_configured_url(service_bundle):
    with pytest.raises(ValueError, match="TAGPROFILE_REDIS_CLUSTER=true needs TAGPROFILE_REDIS"):
        Settings(bundle=service_bundle, redis_cluster=True)


def test_load_and_precompute_spread_users_over_every_master(
    cluster, settings, service_bundle, monkeypatch, capsys
):
    monkeypatch.setenv("TAGPROFILE_REDIS_CLUSTER", "true")
    monkeypatch.setenv("TAGPROFILE_KEY_PREFIX", settings.key_prefix)
    common = ["--bundle", str(service_bundle), "--redis-url", cluster.url]
    assert main(["load", *common, "--batch", "64"]) == 0
    assert main(["load", *common]) == 0  # idempotent
    assert main(["precompute", *common, "--batch", "100"]) == 0
    out = capsys.readouterr().out
    assert "loaded 300 users" in out and "precomputed 300 profiles" in out

    keys = Keys(settings.key_prefix)
    features = keys_by_master(cluster, keys.features_pattern)
    profiles = keys_by_master(cluster, f"{settings.key_prefix}profile:*")
    assert len(features) == 3 and sum(map(len, features.values())) == 300
    assert all(len(on_master) > 50 for on_master in features.values())  # ~100 each
    assert sum(map(len, profiles.values())) == 300
    assert all(len(on_master) > 50 for on_master in profiles.values())

    client = RedisCluster.from_url(cluster.url)
    first = users(service_bundle)[0]
    stored = client.hgetall(keys.features(first["user_id"]))
    for name, values in first["features"].items():
        assert json.loads(stored[name.encode()]) == pytest.approx(values, abs=1e-5)
    client.close()


def test_the_api_and_its_ab_test_on_a_cluster(cluster, settings, service_bundle):
    # events without WAITAOF here (the script alone); the failover test waits for it
    with served(settings.model_copy(update={"event_fsync_timeout_s": 0})) as base:
        ready = httpx.get(f"{base}/readyz").json()
        assert ready["status"] == "ready" and ready["redis"] == "up"
        persistence = ready["persistence"]
        assert persistence["cluster_masters"] == 3
        assert persistence["events_durable"] and persistence["events_fsync_confirmed"]

        user = users(service_bundle)[3]["user_id"]
        first = httpx.get(f"{base}/users/{user}/tags", params={"k": 5}).json()
        again = httpx.get(f"{base}/users/{user}/tags", params={"k": 5}).json()
        assert again["cached"] is True and again["tags"] == first["tags"]
        features = {"hist_tags": [5, 9, 30], "hist_tags_w": [2, 1, 1]}  # MULTI on one key
        put = httpx.put(f"{base}/users/{user}/features", json=features, headers=ADMIN)
        assert put.status_code == 200 and put.json()["stored"] is True
        changed = httpx.get(f"{base}/users/{user}/tags", params={"k": 5}).json()
        assert changed["cached"] is False and changed["tags"] != first["tags"]

        rankings = [rank(base, u["user_id"]) for u in users(service_bundle)[:20]]
        assert all(r["exposure_logged"] for r in rankings)
        accepted = [click(base, r, f"c-{i}") for i, r in enumerate(rankings)]
        assert [a.status_code for a in accepted] == [202] * 20
        replay = click(base, rankings[0], "c-0")  # the same event again: counted once
        assert replay.status_code == 202 and replay.json()["status"] == "duplicate"
        conflict = click(base, rankings[1], "c-0")  # the same id for another event
        assert conflict.status_code == 409
        second = click(base, rankings[0], "other-id")  # a second click, same theme
        assert second.json()["status"] == "already_counted"

        # an exposure whose count is missing (its log failed half-way): nothing counted
        ab = ABKeys(settings.key_prefix)
        with RedisCluster.from_url(cluster.url) as direct:
            assert direct.delete(ab.counted("themes", rankings[5]["request_id"])) == 1
        assert click(base, rankings[5], "late").status_code == 404

        report = httpx.get(f"{base}/experiments/themes/report").json()
        arms = report["arms"].values()
        assert sum(arm["clicks"] for arm in arms) == 20
        assert sum(arm["impressions"] for arm in arms) == 3 * 20
        assert httpx.get(f"{base}/experiments/themes").status_code == 200  # the HTML page

    logged = keys_by_master(cluster, f"{settings.key_prefix}ab:*")
    tagged = [key for keys in logged.values() for key in keys if "{themes}" in key]
    requests = keys_by_master(cluster, ab.request("*"))
    with cluster.client(cluster.nodes[0]) as client:
        slots = {client.cluster("keyslot", key) for key in tagged}
    # the whole log of the experiment (counters, runs, events, counted requests) on one
    # master, in one slot; the request records that /events looks up spread over all
    assert len(tagged) > 40 and len(slots) == 1
    assert [len(keys) > 0 for keys in logged.values()].count(True) == 3
    assert sum(map(len, requests.values())) == 20 and all(requests.values())


def test_a_burst_waits_for_connections_instead_of_failing(cluster, settings, service_bundle):
    # 200 concurrent rankings through 4 connections per master: the cluster client's
    # pools raise when full, the service's connection budget makes them queue instead
    ids = [u["user_id"] for u in users(service_bundle)[:200]]
    calls = [("POST", "/themes/rank", {"user_id": u, "k": 3, "experiment": "themes"}) for u in ids]
    with served(settings.model_copy(update={"redis_max_connections": 4})) as base:
        ranked = asyncio.run(concurrently(base, calls))
        metrics = httpx.get(f"{base}/metrics").text
    assert [r.status for r in ranked] == [200] * len(ids)
    assert all(r.json()["exposure_logged"] for r in ranked)
    assert 'tagprofile_redis_errors_total{kind="busy"}' not in metrics
    assert "tagprofile_redis_up 1.0" in metrics


class EventStream:
    """Clicks on ``rankings`` posted one after another from a thread, each retried on 503
    with the same event id (what a client does) until 202; ``midway`` is set once 10
    are acknowledged, so an outage can be started while the stream runs."""

    def __init__(self, base: str, rankings: list[dict], tag: str) -> None:
        self.base, self.rankings, self.tag = base, rankings, tag
        self.acknowledged: set[str] = set()
        self.unexpected: list[str] = []
        self.refused = 0
        self.midway = threading.Event()
        self._thread = threading.Thread(target=self._post_all, name=f"events-{tag}")

    def _post_all(self) -> None:
        for i, ranking in enumerate(self.rankings):
            if i == 10:
                self.midway.set()
            event_id = f"{self.tag}-{i}"
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                answer = click(self.base, ranking, event_id)
                if answer.status_code == 202:
                    self.acknowledged.add(event_id)
                    break
                if answer.status_code != 503:
                    self.unexpected.append(f"{answer.status_code} {answer.text}")
                    break
                self.refused += 1
                time.sleep(0.05)

    def __enter__(self) -> EventStream:
        self._thread.start()
        assert self.midway.wait(30)
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.join(60)
        assert not self._thread.is_alive()


def test_a_failover_while_events_stream_in_loses_no_acknowledged_event(
    cluster, settings, service_bundle
):
    experiment_key = ABKeys(settings.key_prefix).runs("themes")
    with served(settings) as base:
        rankings = [rank(base, u["user_id"]) for u in users(service_bundle)[:30]]
        with EventStream(base, rankings, "failover") as stream:
            old, new = cluster.failover(experiment_key)
            during = len(stream.acknowledged)
        assert cluster.master_of(experiment_key) is new and new is not old
        assert 10 <= during < len(rankings)  # the failover came mid-stream
        assert stream.unexpected == []
        assert len(stream.acknowledged) == len(rankings)  # every event got its 202
        assert reported_clicks(base) == len(rankings)  # and none of them was lost
        ready = httpx.get(f"{base}/readyz").json()
        assert ready["status"] == "ready" and ready["persistence"]["cluster_masters"] == 3
        after = rank(base, users(service_bundle)[200]["user_id"])  # serving again
        assert after["exposure_logged"] and click(base, after, "after").status_code == 202
    with redis.Redis(host=new.host, port=new.port) as client:
        assert client.info("replication")["role"] == "master"


def test_a_master_killed_and_restarted_while_events_stream_in(cluster, settings, service_bundle):
    # kill -9 of the experiment's master, back 0.3 s later from its AOF (appendfsync
    # always), its replica told not to take over: the service sees refused connections,
    # opens its breaker, answers 503 (retried by the client) and recovers by itself
    experiment_key = ABKeys(settings.key_prefix).runs("themes")
    with served(settings.model_copy(update={"redis_retry_s": 0.2})) as base:
        rankings = [rank(base, u["user_id"]) for u in users(service_bundle)[30:60]]
        with EventStream(base, rankings, "restart") as stream:
            cluster.kill_and_restart(experiment_key, down_s=0.3)
            during = len(stream.acknowledged)
        metrics = httpx.get(f"{base}/metrics").text
        assert 10 <= during < len(rankings)  # the outage came mid-stream
        assert stream.unexpected == [] and stream.refused > 0  # it was felt: 503s
        assert len(stream.acknowledged) == len(rankings)
        assert reported_clicks(base) == len(rankings)  # none lost
        assert httpx.get(f"{base}/readyz").json()["redis"] == "up"
    assert 'tagprofile_redis_errors_total{kind="down"}' in metrics
