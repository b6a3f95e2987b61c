"""``python -m service`` load / precompute / serve, against real Redis servers and a real
uvicorn process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import redis

from deploy.abtest_local import start_api
from service.cli import main
from service.jobs.load import LoadError, read_users
from service.model.bundle import load_bundle
from service.model.features import FeatureSpec
from service.store.connection import URL_FILE
from service.store.keys import Keys
from tests.conftest import PROJECT_ROOT
from tests.service_helpers import client_for, make_settings, users


@pytest.fixture
def prefixed(monkeypatch, service_bundle, redis_server):
    """Settings of a fresh key prefix, also exported for the CLI."""
    settings = make_settings(service_bundle, redis_server.url)
    monkeypatch.setenv("TAGPROFILE_KEY_PREFIX", settings.key_prefix)
    return settings


def cli(settings, command: str, *extra: str) -> int:
    return main([command, "--bundle", str(settings.bundle), "--redis-url", settings.redis_url,
                 *extra])  # fmt: skip


def test_load_writes_every_user_and_the_catalogue(prefixed, service_bundle, capsys):
    assert cli(prefixed, "load", "--batch", "64") == 0
    assert "loaded 300 users and themes.json" in capsys.readouterr().out
    client, keys = redis.Redis.from_url(prefixed.redis_url), Keys(prefixed.key_prefix)
    assert len(client.keys(keys.features_pattern)) == 300
    first = users(service_bundle)[0]
    stored = client.hgetall(keys.features(first["user_id"]))
    for name, values in first["features"].items():
        assert json.loads(stored[name.encode()]) == pytest.approx(values, abs=1e-5)
    version = load_bundle(service_bundle).model_version
    assert client.get(keys.themes(version)) == (service_bundle / "themes.json").read_bytes()
    assert cli(prefixed, "load") == 0  # idempotent
    assert len(client.keys(keys.features_pattern)) == 300


def test_precompute_caches_exactly_what_the_api_serves(prefixed, service_bundle, capsys):
    assert cli(prefixed, "load") == 0
    capsys.readouterr()
    assert cli(prefixed, "precompute", "--batch", "128") == 0
    out = capsys.readouterr().out
    assert "precomputed 300 profiles" in out and "users/s" in out and "0 skipped" in out
    client = redis.Redis.from_url(prefixed.redis_url)
    assert len(client.keys(f"{prefixed.key_prefix}profile:*")) == 300
    user = users(service_bundle)[7]["user_id"]
    cached = redis.Redis.from_url(prefixed.redis_url)
    with client_for(prefixed, load_users=False) as api:
        hit = api.get(f"/users/{user}/tags", params={"k": 10}).json()
        assert hit["cached"] is True
        version = hit["model_version"]
        cached.delete(Keys(prefixed.key_prefix).profile(version, user))
        fresh = api.get(f"/users/{user}/tags", params={"k": 10}).json()
    assert fresh["cached"] is False and fresh["tags"] == hit["tags"]


def test_a_bad_users_file_names_file_and_line(service_bundle, tmp_path):
    spec = FeatureSpec.from_manifest(load_bundle(service_bundle).manifest)
    lines = (service_bundle / "users.jsonl").read_text().splitlines()[:4]
    bad = json.loads(lines[2])
    bad["features"]["hist_tags"] = [9999]
    lines[2] = json.dumps(bad)
    path = tmp_path / "users.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(LoadError, match=r"users.jsonl:3: features.hist_tags\[0\]"):
        list(read_users(path, spec))
    path.write_text(lines[0] + "\n{not json\n")
    with pytest.raises(LoadError, match=r"users.jsonl:2: not JSON"):
        list(read_users(path, spec))


def test_cli_refuses_a_tampered_bundle_with_exit_2(service_bundle, redis_server, tmp_path, capsys):
    import shutil

    tampered = tmp_path / "bundle"
    shutil.copytree(service_bundle, tampered)
    with (tampered / "users.jsonl").open("a") as extra:
        extra.write('{"user_id": "intruder", "features": {}}\n')
    code = main(["load", "--bundle", str(tampered), "--redis-url", redis_server.url])
    assert code == 2
    assert "users.jsonl" in capsys.readouterr().err


def test_serve_runs_uvicorn_with_an_embedded_redis_shared_with_load(service_bundle, tmp_path):
    data_dir, log = tmp_path / "redis", tmp_path / "api.log"
    env = {
        **os.environ,
        "TAGPROFILE_REDIS_DATA_DIR": str(data_dir),
        "TAGPROFILE_INTRA_OP_THREADS": "1",
        "OMP_NUM_THREADS": "1",
    }
    env.pop("TAGPROFILE_REDIS_URL", None)

    def serve(port: int) -> list[str]:
        return [sys.executable, "-m", "service", "serve", "--bundle", str(service_bundle),
                "--port", str(port)]  # fmt: skip

    process, base, ready = start_api(serve, log, env=env)
    user = users(service_bundle)[0]["user_id"]
    try:
        assert ready["status"] == "ready" and ready["redis"] == "up"
        assert httpx.get(f"{base}/users/{user}/tags").json()["source"] == "popular"
        # a second command on the same data directory uses the running embedded server
        loader = subprocess.run(
            [sys.executable, "-m", "service", "load", "--bundle", str(service_bundle)],
            cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert loader.returncode == 0, loader.stderr
        assert httpx.get(f"{base}/users/{user}/tags").json()["source"] == "model"
        redis_url = (data_dir / URL_FILE).read_text().splitlines()[0]
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
    output = log.read_text()
    assert process.returncode == 0, output
    assert f"curl '{base}/users/" in output  # printed, working examples
    assert not (data_dir / URL_FILE).exists()
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(redis_url, socket_connect_timeout=0.5).ping()


def test_serve_with_a_missing_bundle_exits_2_naming_it(tmp_path, capsys):
    assert main(["serve", "--bundle", str(tmp_path / "nothing"), "--port", "1"]) == 2
    assert str(Path(tmp_path / "nothing")) in capsys.readouterr().err


def test_serve_with_a_bad_experiments_file_exits_2_naming_the_key(
    service_bundle, tmp_path, monkeypatch, capsys
):
    bad = tmp_path / "experiments.yaml"
    bad.write_text("experiments:\n  - {name: x, salt: s, control: a, arms: [{name: a}]}\n")
    monkeypatch.setenv("TAGPROFILE_EXPERIMENTS", str(bad))
    assert main(["serve", "--bundle", str(service_bundle), "--port", "1"]) == 2
    assert "experiments[0]" in capsys.readouterr().err


def test_a_cluster_that_does_not_answer_is_an_error_not_a_traceback(
    service_bundle, monkeypatch, capsys
):
    monkeypatch.setenv("TAGPROFILE_REDIS_CLUSTER", "true")
    code = main(["load", "--bundle", str(service_bundle), "--redis-url", "redis://127.0.0.1:1/0"])
    assert code == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_features_that_do_not_exist_are_named(service_bundle, redis_server, tmp_path, capsys):
    missing = tmp_path / "nope.jsonl"
    code = main(["load", "--bundle", str(service_bundle), "--redis-url", redis_server.url,
                 "--features", str(missing)])  # fmt: skip
    assert code == 2
    assert f"{missing}: no such file or directory" in capsys.readouterr().err
