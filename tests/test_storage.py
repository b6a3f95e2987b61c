"""Ragged arrays, reproducible npz files and the processed data set round trip."""

from __future__ import annotations

import hashlib
import zipfile

import numpy as np
import pytest

from training.data.npzio import load_npz, save_npz
from training.data.processed import ProcessedDataset
from training.data.ragged import Ragged
from training.protocol import ProtocolConfig, prepare_dataset

from .factories import make_raw


def test_ragged_from_lists_take_and_positions():
    rows = [[3, 1], [], [7], [2, 2, 5]]
    r = Ragged.from_lists(rows)
    assert r.to_lists() == rows
    assert r.lengths().tolist() == [2, 0, 1, 3]
    assert r.row_ids().tolist() == [0, 0, 2, 3, 3, 3]
    assert r.take(np.array([3, 1, 0])).to_lists() == [[2, 2, 5], [], [3, 1]]
    assert r.value_positions(np.array([3, 0])).tolist() == [3, 4, 5, 0, 1]


def test_ragged_from_pairs_sorts_and_dedupes_within_rows():
    r = Ragged.from_pairs(np.array([2, 0, 2, 2, 0]), np.array([5, 1, 3, 5, 1]), n_rows=4)
    assert r.to_lists() == [[1], [], [3, 5], []]


def test_ragged_map_values_drops_minus_one():
    r = Ragged.from_lists([[0, 1, 2], [2], [1]])
    mapped = r.map_values(np.array([-1, 0, 1]))
    assert mapped.to_lists() == [[0, 1], [1], [0]]


def test_ragged_rejects_inconsistent_offsets():
    with pytest.raises(ValueError, match="offsets"):
        Ragged(np.array([0, 3]), np.array([1, 2], dtype=np.int32))


def test_save_npz_is_byte_reproducible_and_loadable(tmp_path):
    arrays = {"b": np.arange(5, dtype=np.int32), "a": np.array([1.5, 2.5])}
    save_npz(tmp_path / "x.npz", arrays)
    first = (tmp_path / "x.npz").read_bytes()
    save_npz(tmp_path / "x.npz", arrays)
    assert (tmp_path / "x.npz").read_bytes() == first
    loaded = load_npz(tmp_path / "x.npz")
    assert set(loaded) == {"a", "b"}
    np.testing.assert_array_equal(loaded["b"], arrays["b"])
    with zipfile.ZipFile(tmp_path / "x.npz") as archive:
        assert {i.date_time for i in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    assert not (tmp_path / "x.npz.tmp").exists()


def _digest(directory) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def test_processed_dataset_round_trip_and_reproducible_files(tmp_path):
    config = ProtocolConfig(min_tag_count=2, seed=3, negative_ratio=2)
    data, stats = prepare_dataset(make_raw(), config, family="test")
    data.save(tmp_path / "a", stats)
    again, stats_again = prepare_dataset(make_raw(), config, family="test")
    again.save(tmp_path / "b", stats_again)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert set(_digest(tmp_path / "a")) == {"dataset.npz", "vocab.json", "meta.json", "stats.json"}

    loaded = ProcessedDataset.load(tmp_path / "a")
    assert loaded.tag_names == data.tag_names and loaded.user_ids == data.user_ids
    assert loaded.inter_tags == data.inter_tags and loaded.item_tags == data.item_tags
    assert loaded.item_privileged == data.item_privileged
    for name in (
        "user_split",
        "user_offsets",
        "user_cut",
        "inter_item",
        "inter_label",
        "inter_time",
        "inter_sampled",
        "phi_contains",
        "phi_covers",
        "sve_weight",
    ):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(data, name), err_msg=name)
    np.testing.assert_array_equal(loaded.user_attributes["age"], data.user_attributes["age"])
    np.testing.assert_array_equal(loaded.raw_index["tag"], data.raw_index["tag"])
    assert loaded.meta["protocol"]["seed"] == 3 and loaded.meta["format_version"] == 1


def test_loading_a_directory_that_is_not_a_prepared_dataset_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="training prepare"):
        ProcessedDataset.load(tmp_path)


def test_ragged_concat_appends_rows():
    a, b = Ragged.from_lists([[1], [2, 3]]), Ragged.from_lists([[], [4]])
    assert a.concat(b).to_lists() == [[1], [2, 3], [], [4]]
