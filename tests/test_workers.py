"""``serve --workers 2``: real worker processes behind one port, one embedded Redis, one
``/metrics`` for all, a reload that reaches every worker; and a restarted worker that
follows the serving record."""

from __future__ import annotations

import os
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import redis

from deploy.abtest_local import start_api
from service.reload_sync import serving_record
from service.store.connection import URL_FILE
from service.store.keys import Keys
from tests.service_helpers import client_for, copy_with_version, make_settings

ADMIN = {"Authorization": "Bearer workers-token"}


def readiness(base: str) -> tuple[int, str]:
    """(worker pid, model version) of whichever worker answers a fresh connection."""
    ready = httpx.get(f"{base}/readyz", timeout=10).json()
    return ready["details"]["worker_pid"], ready["model_version"]


def sample(base: str, count: int) -> list[tuple[int, str]]:
    """``count`` readiness answers, 8 at a time, so both workers get some."""
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda _: readiness(base), range(count)))


def metric(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{key}="{value}"' for key, value in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{{wanted}}} ") or line.startswith(f"{name} "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name}{{{wanted}}} in /metrics")


@pytest.fixture
def two_bundles(service_bundle, tmp_path) -> tuple[Path, Path]:
    root = tmp_path / "bundles"
    root.mkdir()
    first = copy_with_version(service_bundle, root / "first", "workers-first")
    return first, copy_with_version(service_bundle, root / "second", "workers-second")


def test_two_workers_answer_report_together_and_follow_one_reload(two_bundles, tmp_path):
    first, _ = two_bundles
    data_dir, log = tmp_path / "redis", tmp_path / "api.log"
    env = {
        **os.environ,
        "TAGPROFILE_REDIS_DATA_DIR": str(data_dir),
        "TAGPROFILE_ADMIN_TOKEN": ADMIN["Authorization"].split()[1],
        "TAGPROFILE_RELOAD_POLL_S": "0.2",
        "TAGPROFILE_INTRA_OP_THREADS": "1",
        "OMP_NUM_THREADS": "1",
    }
    for name in ("TAGPROFILE_REDIS_URL", "PROMETHEUS_MULTIPROC_DIR"):
        env.pop(name, None)

    def serve(port: int) -> list[str]:
        return [sys.executable, "-m", "service", "serve", "--bundle", str(first),
                "--port", str(port), "--workers", "2"]  # fmt: skip

    process, base, _ = start_api(serve, log, env=env)
    readyz = {"method": "GET", "route": "/readyz", "status": "2xx"}
    try:
        before = metric(
            httpx.get(f"{base}/metrics").text, "tagprofile_request_seconds_count", **readyz
        )
        answers = sample(base, 64)
        deadline = time.monotonic() + 60
        while len({pid for pid, _ in answers}) < 2 and time.monotonic() < deadline:
            answers += sample(base, 64)  # the second worker may still be starting
        pids = {pid for pid, _ in answers}
        assert len(pids) == 2 and process.pid not in pids
        assert {version for _, version in answers} == {"workers-first"}

        # one /metrics, on whichever worker answers, counts the requests of both
        text = httpx.get(f"{base}/metrics").text
        counted = metric(text, "tagprofile_request_seconds_count", **readyz)
        assert counted - before == len(answers)
        assert metric(text, "tagprofile_redis_up") == 1.0

        reloaded = httpx.post(f"{base}/admin/reload", json={"bundle": "second"}, headers=ADMIN)
        assert reloaded.status_code == 200, reloaded.text
        assert reloaded.json()["model_version"] == "workers-second"
        deadline, serving = time.monotonic() + 20, {}
        while time.monotonic() < deadline:
            serving.update(sample(base, 16))
            if set(serving) == pids and set(serving.values()) == {"workers-second"}:
                break
            time.sleep(0.1)
        assert serving == dict.fromkeys(pids, "workers-second")
        info = httpx.get(f"{base}/metrics").text
        assert metric(info, "tagprofile_model_info", model_version="workers-second",
                      provider="CPUExecutionProvider") == 1.0  # fmt: skip
        redis_url = (data_dir / URL_FILE).read_text().splitlines()[0]
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
    output = log.read_text()
    assert process.returncode == 0, output
    assert output.count("Application startup complete") >= 2
    assert not (data_dir / URL_FILE).exists()  # the one embedded Redis stopped with serve
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(redis_url, socket_connect_timeout=0.5).ping()


def test_a_starting_worker_serves_the_recorded_bundle(two_bundles, redis_server):
    first, second = two_bundles
    settings = make_settings(first, redis_server.url, reload_poll_s=0.2, bundle_root=first.parent)
    redis.Redis.from_url(redis_server.url).set(
        Keys(settings.key_prefix).serving, serving_record(second, "workers-second")
    )
    with client_for(settings) as api:  # e.g. a worker restarted after the others reloaded
        assert api.get("/readyz").json()["model_version"] == "workers-second"


def test_a_record_of_a_bundle_that_fails_keeps_the_configured_one(two_bundles, redis_server):
    first, _ = two_bundles
    settings = make_settings(first, redis_server.url, reload_poll_s=0.2)
    record = serving_record(first.parent / "missing", "gone")
    redis.Redis.from_url(redis_server.url).set(Keys(settings.key_prefix).serving, record)
    with client_for(settings) as api:
        assert api.get("/readyz").json()["model_version"] == "workers-first"


def test_the_follower_reloads_on_a_new_bundle_or_version_and_not_on_its_own_record(tmp_path):
    import asyncio

    from service.reload_sync import ReloadFollower

    record: dict[str, bytes | None] = {"value": None}
    serving = [(tmp_path / "a", "v1")]
    reloads: list[Path] = []

    async def read() -> bytes | None:
        return record["value"]

    async def write(value: bytes) -> None:
        record["value"] = value

    async def reload(path: Path) -> None:
        reloads.append(path)

    follower = ReloadFollower(
        read=read, write=write, reload=reload, serving=lambda: serving[-1], interval_s=1
    )

    async def scenario() -> list[bool]:
        outcomes = [await follower.check()]  # no record yet
        await write(serving_record(tmp_path / "a", "v1"))
        outcomes.append(await follower.check())  # what it serves already
        await write(serving_record(tmp_path / "a", "v2"))  # re-exported into the same folder
        outcomes.append(await follower.check())
        await write(serving_record(tmp_path / "b", "v3"))
        outcomes.append(await follower.check())
        outcomes.append(await follower.check())  # nothing new
        await follower.announce(tmp_path / "c", "v4")  # its own reload
        outcomes.append(await follower.check())
        return outcomes

    assert asyncio.run(scenario()) == [False, False, True, True, False, False]
    assert reloads == [tmp_path / "a", tmp_path / "b"]


def test_a_follower_whose_reload_failed_tries_again_at_the_next_check(tmp_path):
    import asyncio

    from service.reload_sync import ReloadFollower

    record = serving_record(tmp_path / "b", "v2")
    attempts: list[Path] = []

    async def read() -> bytes:
        return record

    async def write(_: bytes) -> None:
        raise AssertionError("a follower does not write")

    async def reload(path: Path) -> None:
        attempts.append(path)
        if len(attempts) == 1:
            raise MemoryError("a transient failure")

    follower = ReloadFollower(read=read, write=write, reload=reload,
                              serving=lambda: (tmp_path / "a", "v1"), interval_s=1)  # fmt: skip

    async def scenario() -> list[bool]:
        with pytest.raises(MemoryError):
            await follower.check()
        return [await follower.check(), await follower.check()]

    assert asyncio.run(scenario()) == [True, False]
    assert attempts == [tmp_path / "b", tmp_path / "b"]
