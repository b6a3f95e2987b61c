"""Chaos and load (issue 13's bar, small): concurrent sessions against real uvicorn and a
real Redis with an append-only file that is killed with -9 mid-load and restarted. No
server error, no acknowledged event lost, no exposure unlogged while Redis is up, no
exposure reported logged that Redis does not have, and a fixed /metrics series count.
``benchmarks/bench_chaos.py`` runs the same scenario with 1,000+ clients."""

from __future__ import annotations

import asyncio

from benchmarks.chaos import Chaos, run
from service.store.embedded import EmbeddedRedis
from tests.service_helpers import make_settings, served, users, write_experiments


def test_redis_killed_mid_load_loses_nothing_acknowledged(service_bundle, tmp_path):
    with EmbeddedRedis(tmp_path / "redis", persistence=True) as server:

        def kill() -> None:
            assert server._proc is not None
            server._proc.kill()  # SIGKILL: no shutdown, no save
            server._proc.wait()

        settings = make_settings(
            service_bundle,
            server.url,
            experiments=write_experiments(tmp_path / "e.yaml"),
            redis_retry_s=0.2,
        )
        ids = [r["user_id"] for r in users(service_bundle)] + ["new-1", "new-2"]
        with served(settings) as base:
            chaos = Chaos(base, ids, clients=300, kill_redis=kill, start_redis=server.start,
                          outage_s=0.5, odd_requests=2000)  # fmt: skip
            result = asyncio.run(run(chaos))
    assert result["server_errors"] == 0, result["requests_by_status"]
    assert result["events_lost"] == 0 and result["events_acknowledged"] >= 600, result
    assert result["exposures_unlogged_while_up"] == 0, result["phases"]
    assert result["exposures_in_redis"] == result["exposures_logged"], result
    assert result["phases"]["outage"]["exposures_unlogged"] > 0, "the outage was not felt"
    assert result["metrics_series_after"] == result["metrics_series_before"]
    assert result["recovery_s"] < 5
