"""Extra training views of train users: only their history period, never another split."""

from __future__ import annotations

import numpy as np
import pytest

from training.augment import augment_train_users
from training.data.processed import TRAIN
from training.protocol import ProtocolConfig, prepare_dataset

from .factories import make_raw


@pytest.fixture(scope="module")
def data():
    raw = make_raw(n_users=120, explicit=True, seed=2)
    return prepare_dataset(raw, ProtocolConfig(min_tag_count=1), family="test")[0]


def test_views_copy_only_the_history_of_train_users(data):
    augmented = augment_train_users(data, [0.5])
    n = data.n_users
    assert augmented.n_users > n
    assert augmented.user_ids[:n] == data.user_ids
    assert (augmented.user_split[n:] == TRAIN).all()
    owners = augmented.raw_index["view_user"][n:]
    assert (data.user_split[owners] == TRAIN).all()
    for view, owner in zip(range(n, augmented.n_users), owners, strict=True):
        assert augmented.user_ids[view].startswith(data.user_ids[owner] + "#")
        rows = slice(augmented.user_offsets[view], augmented.user_offsets[view + 1])
        history = data.history(owner)
        np.testing.assert_array_equal(augmented.inter_item[rows], data.inter_item[history])
        samples = augmented.samples_of(view)
        assert samples.stop > samples.start  # only views with something to predict
        assert (
            augmented.inter_time[augmented.history(view)].max()
            < augmented.inter_time[samples].min()
        )


def test_original_users_are_untouched(data):
    augmented = augment_train_users(data, [0.4, 0.7])
    for split in ("valid", "test"):
        np.testing.assert_array_equal(augmented.users_in(split), data.users_in(split))
        a, b = augmented.single_tag_samples(split), data.single_tag_samples(split)
        np.testing.assert_array_equal(a.tag, b.tag)
        np.testing.assert_array_equal(a.user, b.user)
    assert augment_train_users(data, []) is data


def test_view_weights_are_sve_weights(data):
    augmented = augment_train_users(data, [0.5])
    positives = np.flatnonzero(augmented.inter_is_sample & (augmented.inter_label == 1))
    positives = positives[positives >= len(data.inter_item)]
    assert len(positives)
    sums = np.add.reduceat(augmented.sve_weight, augmented.inter_tags.offsets[:-1])[positives]
    np.testing.assert_allclose(sums, augmented.inter_tags.lengths()[positives], rtol=1e-4)


def test_cut_outside_the_open_interval_is_rejected(data):
    with pytest.raises(ValueError, match="between 0 and 1"):
        augment_train_users(data, [1.0])
