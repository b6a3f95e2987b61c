"""Segments through the API: a ranking request names one of the experiment's declared
segments, the event log counts it, and the report breaks the arms down by it; the
simulator plants an effect in one segment of an A/A experiment and the report finds it
there and nowhere else."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from service.ab import Plant, parse_plant, parse_segments, simulate
from tests.service_helpers import client_for, live_server, make_settings, users

EXPERIMENTS = """
experiments:
  - name: themes
    salt: test-salt
    control: popular
    segments: [home, search]
    arms:
      - {name: popular, weight: 1, ranker: popular}
      - {name: profile, weight: 1, ranker: profile}
  - name: aa
    salt: aa-salt
    control: a
    segments: [home, search]
    arms:
      - {name: a, weight: 1, ranker: popular}
      - {name: b, weight: 1, ranker: popular}
"""


@pytest.fixture
def settings(service_bundle, redis_server, tmp_path):
    path = tmp_path / "experiments.yaml"
    path.write_text(EXPERIMENTS)
    # a loaded test machine can stall a Redis call past the default 0.5 s timeout, and an
    # exposure that is not logged fails the simulation: these tests are not about outages
    return make_settings(service_bundle, redis_server.url, experiments=path, redis_timeout_s=5)


def test_segments_are_logged_and_reported(settings, service_bundle):
    with client_for(settings) as client:
        assert client.get("/experiments").json()["themes"]["segments"] == ["home", "search"]
        seen = {}
        for i, record in enumerate(users(service_bundle)[:40]):
            segment = ("home", "search")[i % 2]
            ranking = client.post(
                "/themes/rank",
                json={"user_id": record["user_id"], "k": 3, "experiment": "themes",
                      "segment": segment},
            ).json()  # fmt: skip
            event = {"event_id": f"e{i}", "request_id": ranking["request_id"], "type": "click",
                     "theme_id": ranking["themes"][0]["theme_id"]}  # fmt: skip
            if segment == "search":
                assert client.post("/events", json=event).status_code == 202
            seen.setdefault((segment, ranking["arm"]), 0)
            seen[(segment, ranking["arm"])] += 1
        report = client.get("/experiments/themes/report").json()
        unknown = client.post("/themes/rank", json={"user_id": "u1", "experiment": "themes",
                                                    "segment": "checkout"})  # fmt: skip
        bare = client.post("/themes/rank", json={"user_id": "u1", "segment": "home"})
    for (segment, arm), n in seen.items():
        totals = report["segments"][segment]["arms"][arm]
        assert (totals["users"], totals["impressions"]) == (n, 3 * n)
        assert totals["clicks"] == (n if segment == "search" else 0)
    assert unknown.status_code == 422 and "segment" in unknown.json()["detail"]
    assert "'checkout'" in unknown.json()["detail"]
    assert bare.status_code == 422 and "segment" in bare.json()["detail"]


def test_a_planted_segment_shows_in_an_aa_report_and_nowhere_else(settings, service_bundle):
    """Arms a and b rank alike; the simulator triples b's clicks in 'search' only."""
    rng = np.random.default_rng(0)
    truth = [
        (r["user_id"], {int(t): float(rng.random()) for t in rng.choice(40, 6, replace=False)})
        for r in users(service_bundle)
    ]
    with client_for(settings), live_server(settings) as base:  # client_for loads the users
        report = asyncio.run(
            simulate(base, "aa", truth, k=5, seed=1, sessions=2, progress=False, concurrency=4,
                     segments={"home": 1, "search": 1}, plants=(Plant("search", "b", 3.0),))
        )  # fmt: skip
    segments = report["segments"]
    search, home = segments["search"]["lift"]["b"], segments["home"]["lift"]["b"]
    assert search["p_adjusted"] < 0.01 and search["relative"] > 1.0
    assert home["p_adjusted"] > 0.05
    assert report["srm"]["mismatch"] is False
    assert any(line.startswith("segment search: b beats a") for line in report["summary"])


def test_segment_mix_and_plant_parsing():
    assert parse_segments("home:0.7, search:0.3") == {"home": 0.7, "search": 0.3}
    assert parse_segments("home,search") == {"home": 1.0, "search": 1.0}
    assert parse_plant("search:b:1.5") == Plant("search", "b", 1.5)
    for bad in ("", "home:x", "home:0"):
        with pytest.raises(ValueError):
            parse_segments(bad)
    for bad in ("search:b", "search:b:x", "search::2", "a:b:c:1", "s:b:-1"):
        with pytest.raises(ValueError):
            parse_plant(bad)


def test_segments_are_validated_in_the_experiment_file(tmp_path):
    from service.ab import ExperimentConfigError, load_experiments

    path = tmp_path / "experiments.yaml"
    second = "segments: [home, search]\n    arms:\n      - {name: a"
    path.write_text(EXPERIMENTS.replace(second, second.replace("search", "home")))
    with pytest.raises(ExperimentConfigError, match=r"experiments\[1\]\.segments\[1\]: duplicate"):
        load_experiments(path)
    path.write_text(EXPERIMENTS.replace("[home, search]", "['home page', search]", 1))
    with pytest.raises(ExperimentConfigError, match=r"experiments\[0\]\.segments\[0\]: String"):
        load_experiments(path)


def test_the_simulator_stops_when_exposures_are_not_logged(service_bundle, tmp_path):
    from service.ab import SimulationError
    from service.store.embedded import EmbeddedRedis

    path = tmp_path / "experiments.yaml"
    path.write_text(EXPERIMENTS)
    with EmbeddedRedis(tmp_path / "redis", persistence=False) as server:
        settings = make_settings(service_bundle, server.url, experiments=path)
        with client_for(settings), live_server(settings) as base:
            server.stop()  # the API keeps ranking, but cannot log exposures
            truth = [(users(service_bundle)[0]["user_id"], {1: 1.0})]
            with pytest.raises(SimulationError, match="could not log the exposure"):
                asyncio.run(simulate(base, "aa", truth, k=3, progress=False))


def test_segment_counts_keep_to_the_run_and_the_event_id_rules(settings, service_bundle):
    """Segments counted by the event log's run-keyed scripts: a retried event id adds no
    segment click, an id reused for another event (409) counts nothing, a second click on
    the same theme counts once; a new salt starts the segments of a new run from zero."""
    user = users(service_bundle)[0]["user_id"]
    body = {"user_id": user, "k": 3, "experiment": "themes", "segment": "search"}
    with client_for(settings) as client:
        ranking = client.post("/themes/rank", json=body).json()
        shown = [theme["theme_id"] for theme in ranking["themes"]]

        def post(event_id: str, theme: str):
            return client.post("/events", json={"event_id": event_id, "type": "click",
                                                "request_id": ranking["request_id"],
                                                "theme_id": theme})  # fmt: skip

        assert post("s1", shown[0]).json()["status"] == "accepted"
        assert post("s1", shown[0]).json()["status"] == "duplicate"
        assert post("s1", shown[1]).status_code == 409
        assert post("s2", shown[0]).json()["status"] == "already_counted"
        report = client.get("/experiments/themes/report").json()
        page = client.get("/experiments/themes").text
    arm = ranking["arm"]
    totals = report["segments"]["search"]["arms"][arm]
    assert (totals["users"], totals["impressions"], totals["clicks"]) == (1, 3, 1)
    assert report["arms"][arm]["clicks"] == 1 and report["unknown_arms"] == {}
    assert f"<code>{report['run']['id']}</code>" in page and 'id="segments"' in page

    path = settings.experiments
    path.write_text(EXPERIMENTS.replace("salt: test-salt", "salt: fresh-run"))
    with client_for(settings, load_users=False) as client:
        fresh = client.get("/experiments/themes/report").json()
        page = client.get("/experiments/themes").text
    assert fresh["run"]["id"] != report["run"]["id"]
    assert all(
        entry["arms"][name]["impressions"] == 0
        for entry in fresh["segments"].values()
        for name in entry["arms"]
    )
    earlier = fresh["other_runs"][report["run"]["id"]]["arms_served"]
    assert earlier == {arm: {"users": 1, "impressions": 3, "clicks": 1}}
    assert 'id="other-runs"' in page


def test_the_openapi_document_states_each_experiments_segments(settings):
    with client_for(settings, load_users=False) as client:
        schema = client.get("/openapi.json").json()
    request = schema["components"]["schemas"]["RankRequest"]
    options = request["properties"]["segment"]["anyOf"]
    assert {"type": "string", "enum": ["home", "search"]} in options
    assert request["anyOf"][0] == {"properties": {"segment": {"type": "null"}}}
    per_experiment = {o["properties"]["experiment"]["const"]: o for o in request["anyOf"][1:]}
    assert set(per_experiment) == {"aa", "themes"}
    assert per_experiment["themes"]["properties"]["segment"] == {"enum": ["home", "search"]}
