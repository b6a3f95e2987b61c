"""``python -m training truth``: the simulator's knowledge of what users really like."""

from __future__ import annotations

import json

import numpy as np
import pytest

from training.cli import main
from training.data.processed import ProcessedDataset
from training.data.synthetic import generate_synthetic
from training.export.truth import truth_records
from training.protocol import ProtocolConfig, prepare_dataset


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("truth") / "data"
    args = ["--users", "120", "--items", "60", "--tags", "24"]
    assert main(["prepare", "--dataset", "synthetic", *args, "--out", str(out)]) == 0
    return out


def test_synthetic_truth_is_the_planted_affinity_scaled_to_one(world, tmp_path, capsys):
    out = tmp_path / "truth.jsonl"
    assert main(["truth", "--data", str(world), "--out", str(out), "--splits", "test"]) == 0
    assert "planted interests" in capsys.readouterr().out
    data = ProcessedDataset.load(world)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["split"] for r in rows} == {"test"}
    assert len(rows) == len(data.users_in("test"))
    affinity = data.truth["user_tag_affinity"][data.raw_index["user"]][:, data.raw_index["tag"]]
    for row in rows[:10]:
        u = data.user_ids.index(row["user_id"])
        weights = dict(row["tags"])
        assert max(weights.values()) == pytest.approx(1.0)
        best = int(np.argmax(affinity[u]))
        assert weights[best] == pytest.approx(1.0)
        for tag, weight in weights.items():
            assert weight == pytest.approx(affinity[u, tag] / affinity[u].max(), abs=1e-5)


def test_real_data_truth_is_the_held_out_tags(world):
    data = ProcessedDataset.load(world)
    data.truth = {}  # as for real data: nothing planted
    records = list(truth_records(data, ("test",)))
    assert records
    held_out = (data.inter_is_sample & (data.inter_label == 1)) & ~data.inter_sampled
    for record in records[:10]:
        u = data.user_ids.index(record["user_id"])
        rows = np.flatnonzero(held_out & (data.inter_user == u))
        expected = sorted({int(t) for r in rows for t in data.inter_tags[r]})
        assert [t for t, _ in record["tags"]] == expected
        assert {w for _, w in record["tags"]} == {1.0}


def test_unknown_split_is_refused(world, tmp_path, capsys):
    assert main(["truth", "--data", str(world), "--out", str(tmp_path / "t"), "--splits", "x"]) == 2
    assert "--splits" in capsys.readouterr().err


def test_sparse_planted_truth_is_the_users_listed_tags_scaled_to_one():
    # a million-user world keeps its truth as CSR (training.data.synthetic, "Scale")
    raw = generate_synthetic(users=200, items=80, tags=300, topics=3, seed=1, sparse=True)
    data, _ = prepare_dataset(raw, ProtocolConfig(min_tag_count=2), family="synthetic")
    assert data.n_tags < raw.n_tags  # some listed tags were filtered out: they must drop
    records = list(truth_records(data, ("train", "valid", "test")))
    assert len(records) > 150
    offsets, ids, values = (raw.truth[f"user_tag_{k}"] for k in ("offsets", "ids", "values"))
    raw_tag = {int(t): i for i, t in enumerate(data.raw_index["tag"])}
    for record in records[:20]:
        u = int(data.raw_index["user"][data.user_ids.index(record["user_id"])])
        row = range(offsets[u], offsets[u + 1])
        listed = {raw_tag[int(ids[j])]: values[j] for j in row if int(ids[j]) in raw_tag}
        top = max(listed.values())
        assert [t for t, _ in record["tags"]] == sorted(listed)
        for tag, weight in record["tags"]:
            assert weight == pytest.approx(listed[tag] / top, abs=1e-5)
