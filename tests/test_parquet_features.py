"""Users' features as Parquet shards: what export and ``python -m training features`` write
is exactly ``users.jsonl``, the bundle loader hash-checks the shards, and ``load`` fills
the feature store from them with the same bytes as from ``users.jsonl``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis

from service.cli import main as service_main
from service.jobs.features_files import LoadError, read_shard
from service.model.bundle import BundleError, load_bundle
from service.model.features import FeatureSpec
from service.store.keys import Keys
from tests.service_helpers import make_settings, users
from training.cli import main as training_main


def shard_rows(paths: list[Path]) -> list[dict]:
    return [row for path in paths for row in pq.read_table(path).to_pylist()]


def test_export_writes_shards_holding_exactly_users_jsonl(service_bundle):
    bundle = load_bundle(service_bundle)
    names = [p.relative_to(service_bundle).as_posix() for p in bundle.user_shards]
    assert names == [f"users/part-0000{i}.parquet" for i in range(3)]  # 300 users, 128 a shard
    assert set(names) <= set(bundle.manifest.files)  # listed, hence hash-checked
    assert [pq.ParquetFile(p).metadata.num_rows for p in bundle.user_shards] == [128, 128, 44]
    assert shard_rows(list(bundle.user_shards)) == users(service_bundle)


def test_features_command_writes_the_runs_users(service_bundle, tmp_path, capsys):
    run = service_bundle.parent / "run"  # where the session fixture trained it
    out = tmp_path / "features"
    assert (
        training_main(["features", "--run", str(run), "--out", str(out), "--shard-rows", "100"])
        == 0
    )
    assert "wrote 300 users in 3 shard(s)" in capsys.readouterr().out
    shards = sorted(out.glob("*.parquet"))
    assert [p.name for p in shards] == [
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
    ]
    assert shard_rows(shards) == users(service_bundle)


def test_the_loader_refuses_a_replaced_shard(service_bundle, tmp_path):
    copy = shutil.copytree(service_bundle, tmp_path / "bundle")
    shard = copy / "users" / "part-00001.parquet"
    shutil.copyfile(copy / "users" / "part-00000.parquet", shard)
    with pytest.raises(BundleError, match=r"users/part-00001.parquet is corrupt or replaced"):
        load_bundle(copy)


def test_a_manifest_may_list_no_other_folder(service_bundle, tmp_path):
    copy = shutil.copytree(service_bundle, tmp_path / "bundle")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["files"]["users/../model.onnx"] = manifest["files"]["model.onnx"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"plain file names .*users/part-NNNNN.parquet"):
        load_bundle(copy)


def test_load_from_shards_stores_what_users_jsonl_stores(service_bundle, redis_server, capsys):
    client = redis.Redis.from_url(redis_server.url)
    stored = []
    for source in ([], ["--features", str(service_bundle / "users.jsonl")]):
        settings = make_settings(service_bundle, redis_server.url)
        argv = ["load", "--bundle", str(service_bundle), "--redis-url", redis_server.url]
        with pytest.MonkeyPatch.context() as env:
            env.setenv("TAGPROFILE_KEY_PREFIX", settings.key_prefix)
            assert service_main([*argv, *source]) == 0
        keys = Keys(settings.key_prefix)
        stored.append(
            {
                u["user_id"]: client.hgetall(keys.features(u["user_id"]))
                for u in users(service_bundle)
            }
        )
    out = capsys.readouterr().out
    assert "loaded 300 users and themes.json" in out and "3 Parquet shard(s)" in out
    assert all(stored[0].values()) and stored[0] == stored[1]  # byte for byte


def test_a_bad_shard_row_names_shard_and_row(service_bundle, tmp_path):
    bundle = load_bundle(service_bundle)
    spec = FeatureSpec.from_manifest(bundle.manifest)
    rows = users(service_bundle)[:3]
    rows[1]["features"]["hist_tags"] = [9999]
    path = tmp_path / "part-00000.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=pq.read_schema(bundle.user_shards[0])), path)
    with pytest.raises(LoadError, match=r"part-00000.parquet: row 2: features.hist_tags\[0\]"):
        list(read_shard(path, spec))
    path.write_bytes(b"not parquet")
    with pytest.raises(LoadError, match="not a readable Parquet file"):
        list(read_shard(path, spec))
