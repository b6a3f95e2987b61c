"""The bundle's data files: the theme catalogue (themes.json) and user features (users.jsonl)."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tests.factories import make_raw
from training.cli import main
from training.data.processed import SPLITS, TEST, TRAIN, ProcessedDataset
from training.data.ragged import Ragged
from training.data.synthetic import generate_synthetic
from training.export.catalogue import (
    build_themes,
    user_feature_records,
    write_themes_json,
    write_users_jsonl,
)
from training.features import sample_truth, user_features
from training.protocol import ProtocolConfig, prepare_dataset


@pytest.fixture(scope="module")
def handmade() -> ProcessedDataset:
    """Implicit feedback (sampled negatives), two privileged fields, one attribute."""
    return prepare_dataset(make_raw(n_users=200), ProtocolConfig(min_tag_count=1), family="test")[0]


@pytest.fixture(scope="module")
def synthetic() -> ProcessedDataset:
    """Explicit negatives and planted topics: co-occurring tags share a topic."""
    raw = generate_synthetic(users=400, items=150, tags=40, topics=6, impressions_per_user=30)
    return prepare_dataset(raw, ProtocolConfig(min_tag_count=1), family="synthetic")[0]


# --------------------------------------------------------------------------- helpers
def expected_title(tags: list[dict]) -> str:
    names = [t["tag"][:1].upper() + t["tag"][1:] for t in tags]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " & " + names[-1]


def stats_by_hand(data: ProcessedDataset, tag_ids: list[int]) -> dict:
    """The theme's stats recounted with plain loops over the interactions."""
    wanted = set(tag_ids)
    coalitions = data.inter_tags.to_lists()
    item_tags = data.item_tags.to_lists()
    support, clicks, exposures, users = 0, 0, 0, set()
    for u in range(data.n_users):
        if data.user_split[u] != TRAIN:
            continue
        for row in range(data.user_offsets[u], data.user_offsets[u + 1]):
            positive = data.inter_label[row] == 1 and not data.inter_sampled[row]
            if positive and wanted <= set(coalitions[row]):
                support += 1
                users.add(u)
            if wanted <= set(item_tags[data.inter_item[row]]):
                exposures += 1
                clicks += int(positive)
    n_train = sum(1 for s in data.user_split if s == TRAIN)
    return {
        "support": support,
        "users": len(users),
        "popularity": round(len(users) / n_train, 6),
        "clicks": clicks,
        "exposures": exposures,
        "ctr": round(clicks / exposures, 6) if exposures else 0.0,
    }


def train_positive_tag_sets(data: ProcessedDataset) -> list[set[int]]:
    """The tag set of every observed positive interaction of a train user (a loop)."""
    sets = []
    for u in range(data.n_users):
        for row in range(data.user_offsets[u], data.user_offsets[u + 1]):
            observed = data.inter_label[row] == 1 and not data.inter_sampled[row]
            if data.user_split[u] == TRAIN and observed:
                sets.append(set(data.inter_tags[row].tolist()))
    return sets


def with_user_rows_changed(data: ProcessedDataset, users: np.ndarray) -> ProcessedDataset:
    """A copy where ``users``' interactions all become clicks on item 0 carrying every tag."""
    rows = np.isin(data.inter_user, users)
    coalitions = [
        list(range(data.n_tags)) if rows[i] else tags
        for i, tags in enumerate(data.inter_tags.to_lists())
    ]
    return dataclasses.replace(
        data,
        inter_tags=Ragged.from_lists(coalitions),
        inter_label=np.where(rows, 1, data.inter_label).astype(np.int8),
        inter_sampled=data.inter_sampled & ~rows,
        inter_item=np.where(rows, 0, data.inter_item).astype(np.int32),
    )


# --------------------------------------------------------------------------- themes
@pytest.mark.parametrize("name", ["handmade", "synthetic"])
def test_theme_catalogue_shape(name: str, request: pytest.FixtureRequest) -> None:
    data = request.getfixturevalue(name)
    catalogue = build_themes(data, max_themes=40)
    assert catalogue["format_version"] == 1
    assert catalogue["dataset"] == data.meta["dataset"] and catalogue["n_tags"] == data.n_tags
    themes = catalogue["themes"]
    assert 10 <= len(themes) <= 40
    assert any(len(t["tags"]) > 1 for t in themes)
    ids = [t["theme_id"] for t in themes]
    assert len(set(ids)) == len(ids) and all(re.fullmatch(r"th\d{4}", i) for i in ids)
    popularity = [t["stats"]["popularity"] for t in themes]
    assert popularity == sorted(popularity, reverse=True)
    titles = [t["title"] for t in themes]
    assert len(set(titles)) == len(titles)
    for theme in themes:
        tags = theme["tags"]
        assert 1 <= len(tags) <= 3
        assert len({t["tag_id"] for t in tags}) == len(tags)
        assert all(data.tag_names[t["tag_id"]] == t["tag"] for t in tags)
        assert math.isclose(sum(t["weight"] for t in tags), 1.0, abs_tol=1e-9)
        assert all(t["weight"] > 0 for t in tags)
        assert theme["title"] and theme["title"] == expected_title(tags)
        stats = theme["stats"]
        assert stats["support"] >= 5 and stats["users"] >= 3
        assert 0 < stats["ctr"] <= 1 and stats["clicks"] <= stats["exposures"]
    json.dumps(catalogue)  # plain JSON types only


def test_themes_are_deterministic_for_a_seed(handmade: ProcessedDataset) -> None:
    first = json.dumps(build_themes(handmade, seed=3))
    assert json.dumps(build_themes(handmade, seed=3)) == first


@pytest.mark.parametrize("name", ["handmade", "synthetic"])
def test_stats_match_a_recount_by_hand(name: str, request: pytest.FixtureRequest) -> None:
    data = request.getfixturevalue(name)
    themes = build_themes(data, max_themes=40)["themes"]
    multi = [t for t in themes if len(t["tags"]) > 1]
    for theme in [themes[0], multi[0], multi[-1]]:
        tag_ids = [t["tag_id"] for t in theme["tags"]]
        assert theme["stats"] == stats_by_hand(data, tag_ids), theme["title"]


def test_synthetic_multi_tag_themes_pair_tags_of_one_topic(synthetic: ProcessedDataset) -> None:
    """Lift keeps pairs that co-occur for a reason: here, tags of the same planted topic."""
    topic = synthetic.truth["tag_topic"][synthetic.raw_index["tag"]]
    themes = build_themes(synthetic, max_themes=40)["themes"]
    multi = [t for t in themes if len(t["tags"]) > 1]
    assert any(len(t["tags"]) == 3 for t in multi)
    same_topic = [len({topic[t["tag_id"]] for t in theme["tags"]}) == 1 for theme in multi]
    assert np.mean(same_topic) >= 0.9


def test_pairs_pass_support_and_lift(synthetic: ProcessedDataset) -> None:
    themes = build_themes(synthetic, max_themes=40, min_support=20, min_lift=1.5)["themes"]
    positives = train_positive_tag_sets(synthetic)

    def count(*tags: int) -> int:
        return sum(set(tags) <= row for row in positives)

    pairs = [t for t in themes if len(t["tags"]) == 2]
    assert pairs
    for theme in pairs:
        a, b = (t["tag_id"] for t in theme["tags"])
        assert count(a, b) == theme["stats"]["support"] >= 20
        lift = count(a, b) * len(positives) / (count(a) * count(b))
        assert lift >= 1.5


def test_only_train_users_count(handmade: ProcessedDataset) -> None:
    before = build_themes(handmade)
    not_train = np.flatnonzero(handmade.user_split != TRAIN)
    assert (handmade.user_split[not_train] == TEST).any()
    assert build_themes(with_user_rows_changed(handmade, not_train)) == before
    # the same change on one train user does show up (the check above is not vacuous)
    one_train_user = np.flatnonzero(handmade.user_split == TRAIN)[:1]
    assert build_themes(with_user_rows_changed(handmade, one_train_user)) != before


@pytest.mark.parametrize("cap", [1, 2, 3])
def test_a_tag_appears_in_at_most_the_cap(synthetic: ProcessedDataset, cap: int) -> None:
    themes = build_themes(synthetic, max_themes=60, max_per_tag=cap)["themes"]
    uses = Counter(t["tag_id"] for theme in themes for t in theme["tags"])
    assert max(uses.values()) <= cap
    if cap == 1:  # every theme then has tags of its own
        assert sum(uses.values()) == len(uses)


def test_tags_with_the_same_name_never_share_a_theme(handmade: ProcessedDataset) -> None:
    # tag0 and tag10 co-occur often (a default theme pairs them); renamed alike, they must not
    base = build_themes(handmade)["themes"]
    assert {"tag0", "tag10"} in [{t["tag"] for t in theme["tags"]} for theme in base]
    names = list(handmade.tag_names)
    names[0], names[10] = "Sci-Fi", "sci fi"
    themes = build_themes(dataclasses.replace(handmade, tag_names=names))["themes"]
    tag_sets = [{t["tag_id"] for t in theme["tags"]} for theme in themes]
    assert not any({0, 10} <= tags for tags in tag_sets)
    assert sum(tags in ({0}, {10}) for tags in tag_sets) == 1  # one "Sci-Fi" card, not two


def test_max_themes_and_bad_parameters(handmade: ProcessedDataset) -> None:
    assert len(build_themes(handmade, max_themes=5)["themes"]) == 5
    assert build_themes(handmade, max_themes=0)["themes"] == []
    assert build_themes(handmade, min_support=10**6)["themes"] == []
    for bad in ({"min_support": 0}, {"max_per_tag": 0}, {"mix": (0, 0, 0)}, {"max_themes": -1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            build_themes(handmade, **bad)


@pytest.mark.realdata
def test_real_hetrec_movielens_2k_catalogue(hetrec_movielens_2k: Path, tmp_path: Path) -> None:
    assert main(["prepare", "--dataset", "hetrec-movielens", "--path",
                 str(hetrec_movielens_2k), "--out", str(tmp_path)]) == 0  # fmt: skip
    data = ProcessedDataset.load(tmp_path)
    start = time.perf_counter()
    catalogue = build_themes(data, max_themes=200)
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0
    themes = catalogue["themes"]
    assert len(themes) == 200
    assert sum(len(t["tags"]) > 1 for t in themes) >= 30
    uses = Counter(t["tag_id"] for theme in themes for t in theme["tags"])
    assert max(uses.values()) <= 3
    by_title = {t["title"]: t for t in themes}
    assert "Anime & Studio ghibli" in by_title  # a meaningful pair, not two popular tags
    assert by_title["Anime & Studio ghibli"]["stats"]["users"] >= 5
    write_themes_json(tmp_path / "themes.json", catalogue)
    assert json.loads((tmp_path / "themes.json").read_text(encoding="utf-8")) == catalogue


# --------------------------------------------------------------------------- users
def test_user_records_are_the_model_features_without_padding(handmade: ProcessedDataset) -> None:
    features = user_features(handmade, max_history=4)
    records = list(user_feature_records(handmade, max_history=4))
    assert [r["user_id"] for r in records] == handmade.user_ids
    bags = {"hist_tags": features.tags, "hist_genre": features.privileged["genre"],
            "hist_brand": features.privileged["brand"]}  # fmt: skip
    with_history = 0
    for u, record in enumerate(records):
        assert record["split"] == SPLITS[handmade.user_split[u]]
        assert "truth_tags" not in record
        feats = record["features"]
        assert set(feats) == {"attributes", *bags, *(f"{name}_w" for name in bags)}
        for name, bag in bags.items():
            n = int((bag.weights[u] > 0).sum())
            assert feats[name] == bag.ids[u, :n].tolist()
            assert np.allclose(feats[f"{name}_w"], bag.weights[u, :n], atol=1e-6)
            assert all(w > 0 for w in feats[f"{name}_w"]) and len(feats[name]) <= 4
            if n:
                assert math.isclose(sum(feats[f"{name}_w"]), 1.0, abs_tol=1e-5)
        with_history += bool(feats["hist_tags"])
        assert feats["attributes"] == [int(handmade.user_attributes["age"][u]) + 1]
    assert with_history > 0.9 * handmade.n_users


def test_truth_tags_only_when_asked(handmade: ProcessedDataset) -> None:
    records = list(user_feature_records(handmade, max_history=8, include_truth=True))
    truth = sample_truth(handmade, np.arange(handmade.n_users))
    for u, record in enumerate(records):
        assert record["truth_tags"] == np.flatnonzero(truth[u]).tolist()
    assert any(record["truth_tags"] for record in records)


def test_write_users_jsonl_round_trips_atomically(handmade: ProcessedDataset, tmp_path) -> None:
    records = list(user_feature_records(handmade, max_history=8, include_truth=True))
    path = tmp_path / "users.jsonl"
    assert write_users_jsonl(path, iter(records)) == handmade.n_users
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == handmade.n_users and all(" " not in line for line in lines)
    assert [json.loads(line) for line in lines] == records
    assert sorted(p.name for p in tmp_path.iterdir()) == ["users.jsonl"]

    def failing():
        yield records[0]
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        write_users_jsonl(path, failing())
    assert path.read_text(encoding="utf-8").splitlines() == lines  # old file untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["users.jsonl"]


def test_write_themes_json_round_trips(handmade: ProcessedDataset, tmp_path: Path) -> None:
    catalogue = build_themes(handmade)
    write_themes_json(tmp_path / "themes.json", catalogue)
    assert json.loads((tmp_path / "themes.json").read_text(encoding="utf-8")) == catalogue
    assert [p.name for p in tmp_path.iterdir()] == ["themes.json"]
