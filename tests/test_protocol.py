"""Protocol invariants on hand-built raw data sets (independent of any file format)."""

from __future__ import annotations

import numpy as np
import pytest

from training import sve
from training.data.processed import TEST, TRAIN, VALID
from training.data.raw import RawDataset
from training.protocol import ProtocolConfig, prepare_dataset

from .factories import make_raw


def prepare(raw: RawDataset, **overrides):
    config = ProtocolConfig(**{"min_tag_count": 1, "seed": 0, **overrides})
    return prepare_dataset(raw, config, family="test")


@pytest.fixture(params=[False, True], ids=["implicit", "explicit"])
def prepared(request):
    raw = make_raw(explicit=request.param)
    data, stats = prepare(raw, negative_ratio=2)
    return raw, data, stats


def test_no_test_user_in_training_samples(prepared):
    _, data, _ = prepared
    train = data.single_tag_samples("train")
    assert len(train) > 0
    assert set(data.user_split[train.user]) == {TRAIN}
    assert not np.isin(train.user, data.users_in("test", "valid")).any()


def test_history_strictly_precedes_samples(prepared):
    _, data, _ = prepared
    users_with_both = 0
    for u in range(data.n_users):
        history = data.inter_time[data.history(u)]
        samples = data.inter_time[data.samples_of(u)]
        assert len(history) >= 1
        if len(samples):
            users_with_both += 1
            assert history.max() < samples.min(), f"user {u}"
    assert users_with_both > data.n_users // 2


def test_history_is_about_the_first_80_percent():
    data, _ = prepare(make_raw(n_users=200))
    observed = ~data.inter_sampled
    history = (~data.inter_is_sample & observed).sum()
    share = history / observed.sum()
    assert 0.7 < share < 0.9


def test_user_split_is_seeded_80_20_with_a_validation_slice():
    data, stats = prepare(make_raw(n_users=200), valid_fraction=0.1)
    counts = np.bincount(data.user_split, minlength=3)
    assert counts[TEST] == 40
    assert counts[VALID] == 16
    assert counts[TRAIN] == 144
    assert stats["test_users"] == 40 and stats["valid_users"] == 16
    again, _ = prepare(make_raw(n_users=200), valid_fraction=0.1)
    other, _ = prepare(make_raw(n_users=200), valid_fraction=0.1, seed=1)
    assert np.array_equal(data.user_split, again.user_split)
    assert not np.array_equal(data.user_split, other.user_split)


def test_tag_filter_drops_rare_tags_and_untagged_interactions():
    raw = make_raw()
    min_count = int(np.median(raw.tag_counts)) + 1
    data, stats = prepare(raw, min_tag_count=min_count)
    kept = {raw.tag_names[t] for t in np.flatnonzero(raw.tag_counts >= min_count)}
    assert set(data.tag_names) == kept
    assert data.inter_tags.lengths().min() >= 1
    assert np.array_equal(data.tag_counts, raw.tag_counts[raw.tag_counts >= min_count])
    assert stats["tags"] == len(kept)
    expected_dropped = int(
        (
            raw.inter_tags.map_values(np.where(raw.tag_counts >= min_count, 0, -1)).lengths() == 0
        ).sum()
    )
    assert stats["dropped"]["untagged_interactions"] == expected_dropped


def test_single_timestamp_user_keeps_everything_as_history():
    raw = make_raw(n_users=3)
    raw.inter_time[raw.inter_user == 0] = 500
    data, _ = prepare(raw)
    u = data.user_ids.index("u0")
    assert data.samples_of(u).start == data.samples_of(u).stop


def test_sampled_negatives_are_untouched_distinct_and_in_the_sample_period():
    raw = make_raw(explicit=False)
    data, stats = prepare(raw, negative_ratio=2)
    users = data.inter_user
    sampled = data.inter_sampled
    assert sampled.any() and (data.inter_label[sampled] == 0).all()
    assert data.inter_is_sample[sampled].all()
    observed_pairs = set(zip(users[~sampled], data.inter_item[~sampled], strict=True))
    negative_pairs = list(zip(users[sampled], data.inter_item[sampled], strict=True))
    assert not observed_pairs & set(negative_pairs)
    assert len(set(negative_pairs)) == len(negative_pairs)
    positives = (data.inter_is_sample & ~sampled & (data.inter_label == 1)).sum()
    assert sampled.sum() == 2 * positives == stats["sampled_negatives"]
    for n in np.flatnonzero(sampled)[:50]:
        assert np.array_equal(data.inter_tags[n], data.item_tags[data.inter_item[n]])


def test_explicit_negatives_are_not_augmented():
    data, stats = prepare(make_raw(explicit=True), negative_ratio=3)
    assert not data.inter_sampled.any() and stats["sampled_negatives"] == 0
    assert (data.inter_label == 0).any()


def test_privileged_values_seen_once_among_train_interactions_become_others():
    raw = make_raw(n_items=300)
    data, stats = prepare(raw)
    # brand i sits on item i only: its count is the number of train-user interactions
    train_rows = ~data.inter_sampled & np.isin(data.user_split[data.inter_user], (TRAIN, VALID))
    seen = np.bincount(data.raw_index["item"][data.inter_item[train_rows]], minlength=300)
    expected = ["others"] + [f"b{i}" for i in np.flatnonzero(seen >= 2)]
    assert data.privileged_names["brand"] == expected
    assert 1 < len(expected) < 301  # both cases occur
    for i, raw_item in enumerate(data.raw_index["item"]):
        (value,) = data.item_privileged["brand"][i]
        assert data.privileged_names["brand"][value] == (
            f"b{raw_item}" if seen[raw_item] >= 2 else "others"
        )
    assert data.privileged_names["genre"][0] == "others"
    assert set(data.privileged_names["genre"][1:]) == {"g0", "g1", "g2"}
    assert stats["privileged"] == {"genre": 4, "brand": len(expected)}
    for i, raw_item in enumerate(data.raw_index["item"][:20]):
        genre = data.privileged_names["genre"][data.item_privileged["genre"][i][0]]
        assert genre == f"g{raw_item % 3}"


def test_sve_weights_sum_to_coalition_size_for_positive_samples(prepared):
    _, data, _ = prepared
    positives = np.flatnonzero(data.inter_is_sample & (data.inter_label == 1))
    assert len(positives)
    for n in positives:
        span = slice(data.inter_tags.offsets[n], data.inter_tags.offsets[n + 1])
        assert data.sve_weight[span].sum() == pytest.approx(len(data.inter_tags[n]), rel=1e-5)
    others = np.setdiff1d(np.arange(len(data.inter_item)), positives)
    assert (data.sve_weight[data.inter_tags.value_positions(others)] == 1).all()


def test_phi_matches_the_public_shapley_api(prepared):
    _, data, _ = prepared
    users = data.inter_user
    positive = (data.inter_label == 1) & ~data.inter_sampled
    checked = 0
    for n in np.flatnonzero(data.inter_is_sample & positive)[:40]:
        clicked = [
            data.inter_tags[c].tolist() for c in np.flatnonzero(positive & (users == users[n]))
        ]
        span = slice(data.inter_tags.offsets[n], data.inter_tags.offsets[n + 1])
        for credit, stored in (("contains", data.phi_contains), ("covers", data.phi_covers)):
            expected = sve.shapley_values(data.inter_tags[n].tolist(), clicked, credit=credit)
            np.testing.assert_allclose(stored[span], expected, atol=1e-6)
        checked += 1
    assert checked > 10


def test_single_tag_samples_expand_each_interaction_once_per_tag(prepared):
    _, data, stats = prepared
    rows = data.single_tag_samples("train", "valid", "test")
    for split in ("train", "valid", "test"):
        assert len(data.single_tag_samples(split)) == stats[f"{split}_samples"]
    assert len(rows) == sum(stats[f"{s}_samples"] for s in ("train", "valid", "test"))
    for r in range(0, len(rows), 7):
        n = rows.interaction[r]
        assert rows.tag[r] in data.inter_tags[n]
        assert rows.item[r] == data.inter_item[n] and rows.label[r] == data.inter_label[n]
    assert stats["positives"] == int(data.single_tag_samples("train").label.sum())


def test_user_attributes_follow_the_kept_users():
    raw = make_raw()
    data, _ = prepare(raw)
    expected = (data.raw_index["user"] % 2).astype(np.int32)
    assert np.array_equal(data.user_attributes["age"], expected)


def test_invalid_config_is_rejected_with_the_field_named():
    with pytest.raises(ValueError, match="test_fraction"):
        ProtocolConfig(min_tag_count=1, test_fraction=1.0)
    with pytest.raises(ValueError, match="tau"):
        ProtocolConfig(min_tag_count=1, tau=0)
    with pytest.raises(ValueError, match="credit"):
        ProtocolConfig(min_tag_count=1, credit="sum")
    with pytest.raises(ValueError, match="min_tag_count"):
        ProtocolConfig(min_tag_count=0)
