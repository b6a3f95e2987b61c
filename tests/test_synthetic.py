"""The synthetic world: deterministic, well-formed, and its planted signal is really there.

The signal tests matter most: if clicks stopped depending on the decisive tags, every model
comparison on synthetic data (tests, demo, A/B simulator) would silently become meaningless.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from training.data import synthetic
from training.data.ragged import Ragged
from training.data.raw import RawDataset
from training.data.synthetic import EPOCH_2020, click_probability, generate_synthetic


@pytest.fixture(scope="module")
def world() -> RawDataset:
    return generate_synthetic(seed=0)


def _assert_same(a: RawDataset, b: RawDataset) -> None:
    for f in dataclasses.fields(RawDataset):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and np.array_equal(x, y), f.name
        elif isinstance(x, dict):
            assert x.keys() == y.keys(), f.name
            for key in x:
                if isinstance(x[key], np.ndarray):
                    assert np.array_equal(x[key], y[key]), (f.name, key)
                else:
                    assert x[key][0] == y[key][0], (f.name, key)
                    assert np.array_equal(
                        getattr(x[key][1], "values", x[key][1]),
                        getattr(y[key][1], "values", y[key][1]),
                    ), (f.name, key)
                    if isinstance(x[key][1], Ragged):
                        assert x[key][1] == y[key][1], (f.name, key)
        else:
            assert x == y, f.name


def _decisive_matrix(ds: RawDataset) -> np.ndarray:
    """Boolean [I, T]: tag t is a decisive tag of item i."""
    rows = np.repeat(np.arange(ds.n_items), np.diff(ds.truth["item_decisive_offsets"]))
    out = np.zeros((ds.n_items, ds.n_tags), dtype=bool)
    out[rows, ds.truth["item_decisive_tags"]] = True
    return out


def _tag_matrix(r: Ragged, n_cols: int) -> np.ndarray:
    out = np.zeros((len(r), n_cols), dtype=bool)
    out[r.row_ids(), r.values] = True
    return out


def test_same_seed_identical_different_seed_different(world: RawDataset) -> None:
    _assert_same(world, generate_synthetic(seed=0))
    other = generate_synthetic(seed=1)
    assert not np.array_equal(world.truth["user_tag_affinity"], other.truth["user_tag_affinity"])
    assert world.inter_item.shape != other.inter_item.shape or not np.array_equal(
        world.inter_item, other.inter_item
    )
    assert world.item_tags != other.item_tags


def test_sizes_shapes_and_dtypes() -> None:
    ds = generate_synthetic(users=50, items=30, tags=20, topics=4, impressions_per_user=10, seed=3)
    ds.validate()
    assert ds.name == "synthetic" and ds.explicit_negatives
    assert (ds.n_users, ds.n_items, ds.n_tags) == (50, 30, 20)
    assert len(set(ds.tag_names)) == 20 and len(set(ds.user_ids)) == 50
    per_user = np.bincount(ds.inter_user, minlength=50)
    assert per_user.min() >= 5 and per_user.max() <= 15  # ⌈m/2⌉ .. m + ⌊m/2⌋
    assert ds.inter_user.dtype == np.int32 and ds.inter_item.dtype == np.int32
    assert ds.inter_label.dtype == np.int8 and ds.inter_time.dtype == np.int64
    assert set(np.unique(ds.inter_label)) <= {0, 1}

    truth = ds.truth
    affinity = truth["user_tag_affinity"]
    assert affinity.dtype == np.float32 and affinity.shape == (50, 20)
    assert np.allclose(affinity.sum(axis=1), 1.0, atol=1e-5) and affinity.min() >= 0
    assert truth["user_topic_affinity"].shape == (50, 4)
    assert np.array_equal(np.unique(truth["tag_topic"]), np.arange(4))  # every topic has tags
    assert truth["item_decisive_offsets"].dtype == np.int64
    assert truth["item_decisive_tags"].dtype == np.int32
    assert truth["inter_click_prob"].shape == (ds.n_interactions,)

    lengths = ds.item_tags.lengths()
    assert lengths.min() >= 2 and lengths.max() <= 6
    decisive = Ragged(truth["item_decisive_offsets"], truth["item_decisive_tags"])
    n_dec = decisive.lengths()
    assert n_dec.min() >= 1 and n_dec.max() <= 2 and np.all(n_dec < lengths)
    for i in range(ds.n_items):
        assert set(decisive[i].tolist()) <= set(ds.item_tags[i].tolist())

    # Coalition = the item's tag set; tag_counts counts interactions containing the tag.
    assert ds.inter_tags == ds.item_tags.take(ds.inter_item)
    assert np.array_equal(ds.tag_counts, np.bincount(ds.inter_tags.values, minlength=20))

    category_vocab, category = ds.privileged["category"]
    assert len(category_vocab) == 4 and np.array_equal(category.lengths(), np.ones(30))
    assert np.array_equal(category.values, truth["item_category"])
    for name in ("age", "region"):
        vocab, values = ds.user_attributes[name]
        assert values.dtype == np.int32 and values.min() >= -1 and values.max() < len(vocab)


def test_tag_names_are_readable_and_grouped_by_topic(world: RawDataset) -> None:
    assert world.tag_names[0] == "vintage-0"
    topic_of_name = [name.rsplit("-", 1)[0] for name in world.tag_names]
    topic_names = world.privileged["category"][0].names
    assert topic_of_name == [topic_names[k] for k in world.truth["tag_topic"]]


def test_edge_sizes() -> None:
    tiny = generate_synthetic(users=1, items=1, tags=1, topics=1, impressions_per_user=1)
    assert tiny.n_interactions == 1 and tiny.item_tags.lengths().tolist() == [1]
    one_tag_per_topic = generate_synthetic(users=20, items=15, tags=5, topics=5, seed=2)
    assert one_tag_per_topic.item_tags.lengths().min() >= 2
    popular_only = generate_synthetic(users=30, items=40, personal_share=0.0)
    assert popular_only.n_interactions > 0


def test_times_increase_per_user(world: RawDataset) -> None:
    assert np.all(np.diff(world.inter_user) >= 0)  # rows grouped by user
    assert np.array_equal(np.unique(world.inter_user), np.arange(world.n_users))
    same_user = np.diff(world.inter_user) == 0
    assert np.all(np.diff(world.inter_time)[same_user] > 0)
    assert world.inter_time.min() >= EPOCH_2020
    lengths = np.bincount(world.inter_user)
    assert lengths.min() < lengths.max()  # history lengths differ


@pytest.mark.parametrize("seed", [0, 7])
def test_ctr_in_intended_range(seed: int) -> None:
    ds = generate_synthetic(users=500, seed=seed)
    assert 0.10 <= ds.inter_label.mean() <= 0.30
    # labels are draws from the planted probabilities
    assert abs(ds.inter_label.mean() - ds.truth["inter_click_prob"].mean()) < 0.01


def test_click_probability_reproduces_planted_model(world: RawDataset) -> None:
    p = click_probability(world.truth, world.inter_user[:500], world.inter_item[:500])
    assert np.allclose(p, world.truth["inter_click_prob"][:500], atol=1e-6)
    grid = click_probability(world.truth, np.zeros((2, 3), int), np.arange(6).reshape(2, 3))
    assert grid.shape == (2, 3)
    with pytest.raises(ValueError, match="same shape"):
        click_probability(world.truth, np.zeros(2, int), np.zeros(3, int))


def test_users_click_items_whose_decisive_tags_they_like(world: RawDataset) -> None:
    affinity = world.truth["user_tag_affinity"]
    u, i = world.inter_user, world.inter_item
    y = world.inter_label.astype(bool)
    top5 = np.zeros_like(affinity, dtype=bool)
    np.put_along_axis(top5, np.argsort(-affinity, axis=1)[:, :5], True, axis=1)
    liked = (_decisive_matrix(world)[i] & top5[u]).any(axis=1)
    assert liked.mean() > 0.05  # enough such impressions to measure
    assert y[liked].mean() > 3 * y[~liked].mean()


def test_decisive_tags_explain_clicks_better_than_non_decisive(world: RawDataset) -> None:
    affinity = world.truth["user_tag_affinity"]
    norm = affinity / affinity.max(axis=1, keepdims=True)
    decisive = _decisive_matrix(world)
    other = _tag_matrix(world.item_tags, world.n_tags) & ~decisive
    u, i = world.inter_user, world.inter_item
    y = world.inter_label.astype(bool)

    def mean_affinity(mask: np.ndarray) -> np.ndarray:
        return (norm[u] * mask[i]).sum(axis=1) / mask[i].sum(axis=1)

    dec, non = mean_affinity(decisive), mean_affinity(other)
    dec_gap = dec[y].mean() - dec[~y].mean()
    non_gap = non[y].mean() - non[~y].mean()
    assert dec_gap > 0.15
    assert dec_gap > 3 * non_gap


def test_userpop_recovers_affinity_better_than_global_popularity(world: RawDataset) -> None:
    affinity = world.truth["user_tag_affinity"].astype(np.float64)
    lengths = world.inter_tags.lengths()
    rows = np.repeat(world.inter_user, lengths)
    clicked = np.repeat(world.inter_label, lengths).astype(np.float64)
    userpop = np.zeros_like(affinity)
    np.add.at(userpop, (rows, world.inter_tags.values), clicked)
    has = userpop.sum(axis=1) > 0
    assert has.mean() > 0.95
    globalpop = np.broadcast_to(userpop.sum(axis=0), affinity.shape)

    def row_corr(a: np.ndarray, b: np.ndarray) -> float:
        a = a - a.mean(axis=1, keepdims=True)
        b = b - b.mean(axis=1, keepdims=True)
        return float(((a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))).mean())

    personal = row_corr(userpop[has], affinity[has])
    global_ = row_corr(globalpop[has], affinity[has])
    assert personal > global_ + 0.1, (personal, global_)


def test_brands_specialise_and_include_singletons(world: RawDataset) -> None:
    vocab, brand = world.privileged["brand"]
    counts = np.bincount(brand.values, minlength=len(vocab))
    assert counts.min() >= 1  # no unused vocabulary entries
    assert (counts == 1).sum() >= 10
    assert counts.max() >= 5
    # brands specialise: items of a multi-item brand share tags far more than random items
    tags = _tag_matrix(world.item_tags, world.n_tags)
    multi = np.flatnonzero(counts >= 2)
    shared = []
    for b in multi[:100]:
        members = np.flatnonzero(brand.values == b)[:2]
        shared.append((tags[members[0]] & tags[members[1]]).any())
    rng = np.random.default_rng(0)
    pairs = rng.integers(0, world.n_items, (200, 2))
    random_shared = (tags[pairs[:, 0]] & tags[pairs[:, 1]]).any(axis=1)
    assert np.mean(shared) > 2 * random_shared.mean()


def test_category_tracks_main_topic(world: RawDataset) -> None:
    agree = world.truth["item_category"] == world.truth["item_topic"]
    assert 0.75 < agree.mean() < 0.98
    tags = world.item_tags
    on_topic = world.truth["tag_topic"][tags.values] == np.repeat(
        world.truth["item_topic"], tags.lengths()
    )
    assert on_topic.mean() > 0.8


def test_attributes_weakly_shape_topic_preferences(world: RawDataset) -> None:
    topic_pref = world.truth["user_topic_affinity"]
    region = world.user_attributes["region"][1]
    known = region >= 0
    assert 0.9 < known.mean() < 1.0  # a few unknown (-1) values

    def spread(labels: np.ndarray) -> float:
        means = np.stack([topic_pref[known][labels == r].mean(axis=0) for r in range(5)])
        return float((means - topic_pref[known].mean(axis=0)).max(axis=1).mean())

    observed = spread(region[known])
    shuffled = spread(np.random.default_rng(0).permutation(region[known]))
    assert observed > 2 * shuffled


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"users": 0}, "users"),
        ({"items": -1}, "items"),
        ({"tags": 5, "topics": 12}, "tags"),
        ({"topics": 0}, "topics"),
        ({"impressions_per_user": 0}, "impressions_per_user"),
        ({"seed": -1}, "seed"),
        ({"users": 2.5}, "users"),
        ({"users": True}, "users"),
        ({"personal_share": 1.5}, "personal_share"),
        ({"boutique_brand_share": -0.1}, "boutique_brand_share"),
        ({"brands_per_tag": 0}, "brands_per_tag"),
        ({"topic_alpha": 0.0}, "topic_alpha"),
        ({"base_logit": float("nan")}, "base_logit"),
    ],
)
def test_invalid_arguments_raise_naming_the_argument(kwargs: dict, argument: str) -> None:
    with pytest.raises(ValueError, match=rf"^{argument}\b"):
        generate_synthetic(**kwargs)


def test_item_tags_drawn_in_blocks_give_the_same_world(
    world: RawDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    # at a million users the [I, T] sampling keys go in blocks: same stream, same world
    monkeypatch.setattr(synthetic, "_CELL_BLOCK", 777)
    monkeypatch.setattr(synthetic, "_PAIR_CHUNK", 1000)
    _assert_same(world, generate_synthetic(seed=0))


@pytest.fixture(scope="module")
def sparse_world() -> RawDataset:
    with pytest.MonkeyPatch.context() as patch:  # several blocks of users, as at 1 M users
        patch.setattr(synthetic, "_USER_BLOCK", 250)
        patch.setattr(synthetic, "_IMPRESSION_USER_BLOCK", 250)
        return generate_synthetic(users=600, items=400, tags=1000, topics=5, seed=2, sparse=True)


def _dense_affinity(ds: RawDataset) -> np.ndarray:
    offsets, ids = ds.truth["user_tag_offsets"], ds.truth["user_tag_ids"]
    out = np.zeros((ds.n_users, ds.n_tags), dtype=np.float32)
    out[np.repeat(np.arange(ds.n_users), np.diff(offsets)), ids] = ds.truth["user_tag_values"]
    return out


def test_sparse_truth_keeps_each_users_strongest_head_tags(sparse_world: RawDataset) -> None:
    truth = sparse_world.truth
    assert "user_tag_affinity" not in truth
    offsets, ids, values = (truth[f"user_tag_{k}"] for k in ("offsets", "ids", "values"))
    assert np.array_equal(np.diff(offsets), np.full(600, synthetic.TRUTH_TAGS_PER_USER))
    rows = ids.reshape(600, -1)
    assert (np.diff(rows, axis=1) > 0).all()  # ascending, distinct: binary-searchable
    assert np.allclose(values.reshape(600, -1).sum(axis=1), 1.0, atol=1e-5)
    assert (values > 0).all()
    # only the HEAD_TAGS tags of highest prior in each topic (200 tags per topic here)
    rank = ids - np.flatnonzero(np.diff(truth["tag_topic"], prepend=-1))[truth["tag_topic"][ids]]
    assert rank.max() < synthetic.HEAD_TAGS
    # users differ: not everyone shares one top tag
    assert len(np.unique(rows[np.arange(600), values.reshape(600, -1).argmax(axis=1)])) > 20


def test_sparse_truth_drives_the_clicks(sparse_world: RawDataset) -> None:
    truth = sparse_world.truth
    u, i = sparse_world.inter_user, sparse_world.inter_item
    p = click_probability(truth, u, i)
    assert np.allclose(p, truth["inter_click_prob"], atol=1e-6)
    dense = {k: v for k, v in truth.items() if not k.startswith("user_tag_")}
    dense["user_tag_affinity"] = _dense_affinity(sparse_world)
    assert np.allclose(click_probability(dense, u, i), p, atol=1e-12)  # CSR lookup is exact
    y = sparse_world.inter_label.astype(bool)
    liked = (_decisive_matrix(sparse_world)[i] & (dense["user_tag_affinity"][u] > 0)).any(axis=1)
    assert liked.mean() > 0.05 and y[liked].mean() > 2 * y[~liked].mean()
    assert 0.08 <= y.mean() <= 0.30
    sparse_world.validate()  # blocks of users join into one well-formed world
    assert np.array_equal(np.unique(u), np.arange(600)) and (np.diff(u) >= 0).all()


def test_large_worlds_switch_to_the_sparse_truth(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(synthetic, "SPARSE_ABOVE_CELLS", 50 * 20 - 1)
    assert "user_tag_offsets" in generate_synthetic(users=50, items=30, tags=20, topics=4).truth
    monkeypatch.setattr(synthetic, "SPARSE_ABOVE_CELLS", 50 * 20)
    assert "user_tag_affinity" in generate_synthetic(users=50, items=30, tags=20, topics=4).truth
