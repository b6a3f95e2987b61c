"""The HTTP API against a real Redis and a real exported model: profiles, cache, themes,
validation, admin endpoints, reload, health and metrics."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import redis

from service.store.keys import Keys
from tests.service_helpers import (
    ADMIN,
    client_for,
    copy_with_version,
    make_settings,
    reference_scores,
    users,
)


@pytest.fixture
def settings(service_bundle, redis_server):
    return make_settings(service_bundle, redis_server.url)


def expected_top(scores: np.ndarray, k: int) -> list[int]:
    return sorted(range(len(scores)), key=lambda t: (-scores[t], t))[:k]


def test_profile_is_the_models_top_k_then_a_cache_hit(settings, service_bundle):
    with client_for(settings) as client:
        for record in users(service_bundle)[:5]:
            scores = reference_scores(service_bundle, record["features"])
            first = client.get(f"/users/{record['user_id']}/tags", params={"k": 10}).json()
            assert first["source"] == "model" and first["cached"] is False
            assert [t["tag_id"] for t in first["tags"]] == expected_top(scores, 10)
            got = np.array([t["score"] for t in first["tags"]])
            assert np.allclose(got, scores[expected_top(scores, 10)], atol=1e-5)
            manifest = json.loads((service_bundle / "manifest.json").read_text())
            assert [t["tag"] for t in first["tags"]] == [
                manifest["tags"][t] for t in expected_top(scores, 10)
            ]
            second = client.get(f"/users/{record['user_id']}/tags", params={"k": 10}).json()
            assert second["cached"] is True
            assert (
                second["tags"] == first["tags"]
                and second["model_version"] == first["model_version"]
            )
            smaller = client.get(f"/users/{record['user_id']}/tags", params={"k": 3}).json()
            assert smaller["cached"] is True and smaller["tags"] == first["tags"][:3]


def test_cached_profile_has_a_jittered_ttl_and_expires(service_bundle, redis_server):
    settings = make_settings(
        service_bundle, redis_server.url, profile_ttl_s=100, profile_ttl_jitter=0.5
    )
    r = redis.Redis.from_url(redis_server.url)
    with client_for(settings) as client:
        version = client.get("/readyz").json()["model_version"]
        ttls = []
        for record in users(service_bundle)[:20]:
            client.get(f"/users/{record['user_id']}/tags")
            ttls.append(r.ttl(Keys(settings.key_prefix).profile(version, record["user_id"])))
        assert all(100 <= ttl <= 150 for ttl in ttls), ttls
        assert len(set(ttls)) > 1  # jitter spreads the expiries
    short = make_settings(service_bundle, redis_server.url, profile_ttl_s=1, profile_ttl_jitter=0)
    user = users(service_bundle)[0]["user_id"]
    with client_for(short) as client:
        assert client.get(f"/users/{user}/tags").json()["cached"] is False
        assert client.get(f"/users/{user}/tags").json()["cached"] is True
        time.sleep(1.3)
        assert client.get(f"/users/{user}/tags").json()["cached"] is False


def test_a_new_model_version_never_serves_the_old_versions_profile(
    service_bundle, redis_server, tmp_path
):
    old = make_settings(service_bundle, redis_server.url)
    user = users(service_bundle)[0]["user_id"]
    with client_for(old) as client:
        client.get(f"/users/{user}/tags")
        assert client.get(f"/users/{user}/tags").json()["cached"] is True
    newer = copy_with_version(service_bundle, tmp_path / "v2", "ctmvm-v2")
    settings = old.model_copy(update={"bundle": newer})
    with client_for(settings, load_users=False) as client:
        body = client.get(f"/users/{user}/tags").json()
        assert body["model_version"] == "ctmvm-v2" and body["cached"] is False
        assert client.get(f"/users/{user}/tags").json()["cached"] is True
    keys = redis.Redis.from_url(redis_server.url).keys(f"{old.key_prefix}profile:*:{user}")
    assert len(keys) == 2


def test_unknown_user_gets_the_models_cold_start_tags(settings, service_bundle):
    with client_for(settings) as client:
        body = client.get("/users/nobody-at-all/tags", params={"k": 4}).json()
    assert body["source"] == "popular" and body["cached"] is False
    assert [t["tag_id"] for t in body["tags"]] == expected_top(
        reference_scores(service_bundle, {}), 4
    )


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/users/u0/tags?k=0", "query.k"),
        ("/users/u0/tags?k=51", "query.k"),
        ("/users/u0/tags?k=ten", "query.k"),
        ("/users/bad%20id/tags", "path.user_id"),
        ("/users/" + "x" * 129 + "/tags", "path.user_id"),
        ("/users/a%2Fb/tags", None),  # a slash never reaches the handler
    ],
)
def test_bad_profile_requests_are_4xx_naming_the_field(settings, path, field):
    with client_for(settings, load_users=False) as client:
        response = client.get(path)
    assert 400 <= response.status_code < 500
    if field is not None:
        assert response.status_code == 422
        assert field in response.json()["detail"]


def test_k_equal_to_max_k_is_allowed(settings, service_bundle):
    with client_for(settings) as client:
        body = client.get(f"/users/{users(service_bundle)[0]['user_id']}/tags?k=50").json()
    assert len(body["tags"]) == 40  # the vocabulary is smaller than max_k


def theme_scores(bundle, scores) -> tuple[list[str], np.ndarray]:
    themes = json.loads((bundle / "themes.json").read_text())["themes"]
    values = np.array(
        [sum(t["weight"] * float(scores[t["tag_id"]]) for t in theme["tags"]) for theme in themes]
    )
    return [theme["theme_id"] for theme in themes], values


def brute_force(ids: list[str], values: np.ndarray, k: int, among=None) -> list[str]:
    order = [i for i in range(len(ids)) if among is None or ids[i] in among]
    return [ids[i] for i in sorted(order, key=lambda i: (-values[i], i))[:k]]


def test_theme_ranking_matches_scores_computed_from_the_bundle(settings, service_bundle):
    with client_for(settings) as client:
        for record in users(service_bundle)[:8]:
            ids, values = theme_scores(
                service_bundle, reference_scores(service_bundle, record["features"])
            )
            body = client.post("/themes/rank", json={"user_id": record["user_id"], "k": 20}).json()
            got = [t["theme_id"] for t in body["themes"]]
            assert got == brute_force(ids, values, 20)
            assert np.allclose(
                [t["score"] for t in body["themes"]], sorted(values, reverse=True)[:20], atol=1e-5
            )
            for theme in body["themes"]:
                contributions = [t["contribution"] for t in theme["tags"]]
                assert contributions == sorted(contributions, reverse=True)
                assert sum(contributions) == pytest.approx(theme["score"], abs=1e-5)
            candidates = ids[::7][:10][::-1]
            ranked = client.post(
                "/themes/rank",
                json={"user_id": record["user_id"], "k": 5, "candidates": candidates},
            ).json()
            assert [t["theme_id"] for t in ranked["themes"]] == brute_force(
                ids, values, 5, set(candidates)
            )
            assert ranked["request_id"] != body["request_id"] and ranked["arm"] is None


def test_theme_ranking_of_an_unknown_user_uses_cold_start_scores(settings, service_bundle):
    ids, values = theme_scores(service_bundle, reference_scores(service_bundle, {}))
    with client_for(settings, load_users=False) as client:
        body = client.post("/themes/rank", json={"user_id": "new-user", "k": 5}).json()
    assert body["source"] == "popular"
    assert [t["theme_id"] for t in body["themes"]] == brute_force(ids, values, 5)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"user_id": "u0", "candidates": ["th0001", "nope", "th9999"]}, "nope"),
        ({"user_id": "u0", "candidates": []}, "candidates"),
        ({"user_id": "u0", "k": 0}, "k"),
        ({"user_id": "u0", "k": 101}, "k"),
        ({"k": 3}, "user_id"),
        ({"user_id": "no spaces"}, "user_id"),
        ({"user_id": "u0", "colour": "red"}, "colour"),
        ({"user_id": "u0", "experiment": "nope"}, "experiment"),
    ],
)
def test_bad_rank_requests_are_422_naming_the_field(settings, body, field):
    with client_for(settings, load_users=False) as client:
        response = client.post("/themes/rank", json=body)
    assert response.status_code == 422
    assert field in response.json()["detail"]


def test_unknown_candidates_are_all_named(settings):
    with client_for(settings, load_users=False) as client:
        response = client.post(
            "/themes/rank", json={"user_id": "u0", "candidates": ["th0001", "x1", "x2"]}
        )
    assert response.json()["detail"] == "candidates: unknown theme ids ['x1', 'x2']"


def test_admin_endpoints_refuse_without_the_token(settings, service_bundle, redis_server):
    with client_for(settings, load_users=False) as client:
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "test-admin"}):
            assert client.put("/users/u0/features", json={}, headers=headers).status_code == 401
            assert client.post("/admin/reload", headers=headers).status_code == 401
    disabled = make_settings(service_bundle, redis_server.url, admin_token=None)
    with client_for(disabled, load_users=False) as client:
        response = client.post("/admin/reload", headers=ADMIN)
        assert response.status_code == 403 and "TAGPROFILE_ADMIN_TOKEN" in response.text


def test_put_features_replaces_the_record_and_invalidates_the_profile(settings, service_bundle):
    user = users(service_bundle)[0]["user_id"]
    with client_for(settings) as client:
        client.get(f"/users/{user}/tags")
        assert client.get(f"/users/{user}/tags").json()["cached"] is True
        features = {"hist_tags": [5, 9, 30], "hist_tags_w": [2, 1, 1]}
        stored = client.put(f"/users/{user}/features", json=features, headers=ADMIN)
        assert stored.status_code == 200 and stored.json()["stored"] is True
        body = client.get(f"/users/{user}/tags", params={"k": 5}).json()
        assert body["cached"] is False and body["source"] == "model"
        expected = reference_scores(
            service_bundle, {"hist_tags": [5, 9, 30], "hist_tags_w": [0.5, 0.25, 0.25]}
        )
        assert [t["tag_id"] for t in body["tags"]] == expected_top(expected, 5)


@pytest.mark.parametrize(
    ("features", "field"),
    [
        ({"hist_tags": [1, 400]}, "body.hist_tags[1]"),
        ({"hist_tags": [1, 2], "hist_tags_w": [1]}, "body.hist_tags_w"),
        ({"hist_tags": ["a"]}, "body.hist_tags[0]"),
        ({"hist_tags": [1], "hist_tags_w": [-1]}, "body.hist_tags_w[0]"),
        ({"hist_tags": [1, 1]}, "body.hist_tags"),
        ({"favourite": [1]}, "body.favourite"),
        ({"attributes": [1]}, "body.attributes"),
        ({"hist_tags": list(range(40)) * 3}, "body.hist_tags"),
    ],
)
def test_bad_features_are_422_and_store_nothing(settings, service_bundle, features, field):
    user = users(service_bundle)[0]
    with client_for(settings) as client:
        response = client.put(f"/users/{user['user_id']}/features", json=features, headers=ADMIN)
        assert response.status_code == 422
        assert response.json()["detail"].startswith(field)
    stored = redis.Redis.from_url(settings.redis_url).hgetall(
        Keys(settings.key_prefix).features(user["user_id"])
    )
    assert json.loads(stored[b"hist_tags"]) == user["features"]["hist_tags"]


def test_reload_swaps_versions_and_a_corrupt_bundle_keeps_the_old_one(
    settings, service_bundle, tmp_path
):
    user = users(service_bundle)[0]["user_id"]
    corrupt = copy_with_version(service_bundle, tmp_path / "corrupt", "ctmvm-corrupt")
    with (corrupt / "model.onnx").open("r+b") as model:
        model.seek(100)
        model.write(b"\x00" * 64)
    newer = copy_with_version(service_bundle, tmp_path / "newer", "ctmvm-newer")
    with client_for(settings.model_copy(update={"bundle_root": tmp_path})) as client:
        before = client.get("/readyz").json()["model_version"]
        failed = client.post("/admin/reload", json={"bundle": str(corrupt)}, headers=ADMIN)
        assert failed.status_code == 422
        assert "bundle" in failed.json()["detail"] and before in failed.json()["detail"]
        assert client.get("/readyz").json()["model_version"] == before
        assert client.get(f"/users/{user}/tags").json()["model_version"] == before
        missing = client.post("/admin/reload", json={"bundle": str(tmp_path / "no")}, headers=ADMIN)
        assert missing.status_code == 404 and missing.json()["errors"][0]["field"] == "bundle"
        swapped = client.post("/admin/reload", json={"bundle": str(newer)}, headers=ADMIN)
        assert swapped.status_code == 200
        assert swapped.json() == {
            "model_version": "ctmvm-newer",
            "previous_version": before,
            "provider": "CPUExecutionProvider",
        }
        body = client.get(f"/users/{user}/tags").json()
        assert body["model_version"] == "ctmvm-newer" and body["cached"] is False
        assert 'tagprofile_reloads_total{outcome="failed"} 1.0' in client.get("/metrics").text


def test_health_readiness_metrics_and_docs(settings, service_bundle):
    user = users(service_bundle)[0]["user_id"]
    with client_for(settings) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz")
        assert ready.status_code == 200
        body = ready.json()
        assert body["status"] == "ready" and body["redis"] == "up"
        assert body["provider"] == "CPUExecutionProvider" and body["themes"] > 0
        assert body["model_version"].startswith("ctmvm-")
        client.get(f"/users/{user}/tags")
        client.get(f"/users/{user}/tags")
        text = client.get("/metrics").text
        assert 'tagprofile_profile_cache_total{result="hit"} 1.0' in text
        assert 'tagprofile_profile_cache_total{result="miss"} 1.0' in text
        assert 'route="/users/{user_id}/tags"' in text
        assert "tagprofile_model_batch_size_count" in text
        assert "tagprofile_redis_up 1.0" in text
        paths = client.get("/openapi.json").json()["paths"]
        assert {"/users/{user_id}/tags", "/themes/rank", "/admin/reload"} <= set(paths)
        assert client.get("/docs").status_code == 200
