"""A/B counts belong to one configuration (a run: salt and arms): a fresh salt or a
renamed arm starts from zero and the earlier run stays listed; events of an experiment
that is no longer configured are refused; an event id is tied to its payload."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from service.ab import ABStore, Exposure
from service.ab.experiments import load_experiments
from tests.service_helpers import (
    EXPERIMENTS,
    client_for,
    load_users_into,
    make_settings,
    users,
    write_experiments,
)


def rank(client, user_id: str, experiment: str = "themes") -> dict:
    body = {"user_id": user_id, "k": 3, "experiment": experiment}
    response = client.post("/themes/rank", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def event(client, ranking: dict, event_id: str, position: int = 0, kind: str = "click"):
    return client.post(
        "/events",
        json={
            "event_id": event_id,
            "request_id": ranking["request_id"],
            "type": kind,
            "theme_id": ranking["themes"][position]["theme_id"],
        },
    )


def clicks(report: dict) -> int:
    return sum(arm["clicks"] for arm in report["arms"].values())


@pytest.mark.parametrize(
    "change",
    [
        ("salt: test-salt", "salt: fresh-run"),
        ("{name: profile, weight: 1", "{name: treatment, weight: 1"),
    ],
    ids=["fresh-salt", "renamed-arm"],
)
def test_a_changed_configuration_starts_a_new_run(service_bundle, redis_server, tmp_path, change):
    before = write_experiments(tmp_path / "before.yaml")
    after = write_experiments(tmp_path / "after.yaml", EXPERIMENTS.replace(*change))
    settings = make_settings(service_bundle, redis_server.url, experiments=before)
    load_users_into(settings)
    ids = [r["user_id"] for r in users(service_bundle)[:8]]
    with client_for(settings, load_users=False) as client:
        for user in ids:
            assert event(client, rank(client, user), f"e-{user}").status_code == 202
        first = client.get("/experiments/themes/report").json()
    assert clicks(first) == 8
    changed = settings.model_copy(update={"experiments": after})
    with client_for(changed, load_users=False) as client:
        fresh = client.get("/experiments/themes/report").json()
        assert clicks(fresh) == 0 and fresh["run"]["id"] != first["run"]["id"]
        earlier = fresh["other_runs"][first["run"]["id"]]
        assert earlier["salt"] == first["run"]["salt"]
        assert sum(arm["clicks"] for arm in earlier["arms_served"].values()) == 8
        assert event(client, rank(client, ids[0]), "new-run").status_code == 202
        assert clicks(client.get("/experiments/themes/report").json()) == 1


def test_events_of_an_experiment_no_longer_configured_are_410(
    service_bundle, redis_server, tmp_path
):
    settings = make_settings(
        service_bundle, redis_server.url, experiments=write_experiments(tmp_path / "a.yaml")
    )
    user = users(service_bundle)[0]["user_id"]
    with client_for(settings) as client:
        ranking = rank(client, user)
    renamed = write_experiments(
        tmp_path / "b.yaml", EXPERIMENTS.replace("name: themes", "name: t2")
    )
    with client_for(settings.model_copy(update={"experiments": renamed}), load_users=False) as c:
        gone = event(c, ranking, "late-click")
    assert gone.status_code == 410, gone.text
    assert gone.json()["errors"][0]["field"] == "request_id"


def test_an_arm_outside_the_configuration_is_reported(service_bundle, redis_server, tmp_path):
    path = write_experiments(tmp_path / "e.yaml")
    settings = make_settings(service_bundle, redis_server.url, experiments=path)
    experiment = load_experiments(path)["themes"]

    async def ghost_exposure() -> None:  # a replica whose arm the configuration lacks
        client = aioredis.Redis.from_url(settings.redis_url)
        log = ABStore(client, settings.key_prefix)
        exposure = Exposure("themes", "ghost", "u1", ("th0001", "th0002"), experiment.run_id)
        await log.log_exposure("ghost-request", exposure, experiment.run)
        await client.aclose()

    asyncio.run(ghost_exposure())
    with client_for(settings, load_users=False) as client:
        report = client.get("/experiments/themes/report").json()
    assert report["unknown_arms"] == {"ghost": {"users": 1, "impressions": 2, "clicks": 0}}


def test_an_event_id_reused_for_another_event_is_409_and_counts_nothing(
    service_bundle, redis_server, tmp_path
):
    settings = make_settings(
        service_bundle, redis_server.url, experiments=write_experiments(tmp_path / "e.yaml")
    )
    one, two = (r["user_id"] for r in users(service_bundle)[:2])
    with client_for(settings) as client:
        first, second = rank(client, one), rank(client, two)
        assert event(client, first, "shared-id").json()["status"] == "accepted"
        same = event(client, first, "shared-id")
        assert same.status_code == 202 and same.json()["status"] == "duplicate"
        for ranking, position, kind in ((second, 0, "click"), (first, 1, "click"),
                                        (first, 0, "impression")):  # fmt: skip
            reused = event(client, ranking, "shared-id", position, kind)
            assert reused.status_code == 409, reused.text
            assert reused.json()["errors"][0]["field"] == "event_id"
        report = client.get("/experiments/themes/report").json()
    assert clicks(report) == 1
