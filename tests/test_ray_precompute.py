"""``precompute --engine ray`` on a real local Ray (one per module): Ray Data reads the
bundle's Parquet shards, an actor pool scores them, and Redis ends up holding byte for byte
the profiles the in-process engine writes; finished shards are remembered, so a rerun skips
them and a killed job resumes where it stopped."""

from __future__ import annotations

import sys

import pytest
import redis

from service.cli import main
from service.jobs.ray_engine import EngineUnavailable, import_ray, precompute_on_ray
from service.model.bundle import load_bundle
from service.store.keys import Keys
from tests.service_helpers import make_settings, users
from training.cli import main as training_main

ray = pytest.importorskip("ray")  # the `scale` extra (make install has it)


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def prefixed(monkeypatch, service_bundle, redis_server):
    settings = make_settings(service_bundle, redis_server.url, profile_ttl_s=600)
    monkeypatch.setenv("TAGPROFILE_KEY_PREFIX", settings.key_prefix)
    monkeypatch.setenv("TAGPROFILE_PROFILE_TTL_S", "600")
    return settings


def cli(settings, command: str, *extra: str) -> int:
    return main([command, "--bundle", str(settings.bundle), "--redis-url", settings.redis_url,
                 *extra])  # fmt: skip


def profiles(client: redis.Redis, settings) -> dict[bytes, bytes]:
    keys = client.keys(f"{settings.key_prefix}profile:*")
    return dict(zip(keys, client.mget(keys), strict=True)) if keys else {}


def test_ray_writes_the_profiles_the_local_engine_writes_and_skips_finished_shards(
    prefixed, service_bundle, capsys
):
    client = redis.Redis.from_url(prefixed.redis_url)
    assert cli(prefixed, "load") == 0 and cli(prefixed, "precompute") == 0
    local = profiles(client, prefixed)
    assert len(local) == 300
    client.delete(*local)
    bundle = load_bundle(service_bundle)
    done = Keys(prefixed.key_prefix).precompute_done(bundle.model_version)
    client.sadd(done, *(entry.sha256 for entry in bundle.manifest.files.values()))  # stale

    ray_run = ["precompute", "--engine", "ray", "--actors", "1", "--batch", "100"]
    assert cli(prefixed, *ray_run, "--restart") == 0  # forgets the stale finished shards
    out = capsys.readouterr().out
    assert "precomputed 300 profiles" in out and "on Ray (1 actors)" in out
    assert "shards: 3 scored, 0 done before" in out and "0 skipped" in out
    assert profiles(client, prefixed) == local  # same keys, same bytes
    assert all(600 - 5 <= client.ttl(key) <= 660 for key in list(local)[:20])  # TTL + jitter
    assert client.smembers(done) == {p.sha256.encode() for n, p in bundle.manifest.files.items()
                                     if n.startswith("users/")}  # fmt: skip
    assert 0 < client.ttl(done) <= 600  # gone no later than the run's first profiles

    assert cli(prefixed, *ray_run) == 0  # every shard finished: no Ray job at all
    out = capsys.readouterr().out
    assert "precomputed 0 profiles" in out and "shards: 0 scored, 3 done before" in out


def test_a_rerun_scores_only_unfinished_shards_of_features_given_as_a_folder(
    prefixed, service_bundle, tmp_path
):
    """A job that died after two shards: the rerun scores the third only. The shards come
    from `python -m training features` (other files, same content): shards are known by
    content, so the bundle's finished ones count as finished."""
    client, keys = redis.Redis.from_url(prefixed.redis_url), Keys(prefixed.key_prefix)
    bundle = load_bundle(service_bundle)
    run, folder = service_bundle.parent / "run", tmp_path / "features"
    assert (
        training_main(["features", "--run", str(run), "--out", str(folder), "--shard-rows", "128"])
        == 0
    )
    ids = [bundle.manifest.files[f"users/part-0000{i}.parquet"].sha256 for i in range(3)]
    client.sadd(keys.precompute_done(bundle.model_version), *ids[:2])
    report = precompute_on_ray(
        bundle,
        prefixed.redis_url,
        client,
        keys,
        ttl_s=600,
        features=folder,
        actors=1,
        progress=False,
    )
    assert (report.users, report.shards, report.shards_done_before) == (44, 1, 2)
    last = [u["user_id"] for u in users(service_bundle)[256:]]
    assert {k.decode().rsplit(":", 1)[1] for k in profiles(client, prefixed)} == set(last)
    assert client.scard(keys.precompute_done(bundle.model_version)) == 3


def test_without_ray_installed_the_error_says_which_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(EngineUnavailable, match=r"tagprofile\[scale\]"):
        import_ray()


def test_ray_flags_need_the_ray_engine(prefixed, capsys):
    assert cli(prefixed, "precompute", "--actors", "2") == 2
    assert "--actors: only with --engine ray" in capsys.readouterr().err
