"""The theme catalogue (service/ranking/themes.py) against small catalogues built here:
rankings must equal an independent brute-force ``W @ scores`` (score descending, ties by
file order) on both paths (faiss retrieval and candidate re-ranking), and every way a
catalogue can be unfit must be refused with a ThemeCatalogueError naming the place."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pytest

from service.ranking.themes import (
    RankedTheme,
    Theme,
    ThemeCatalogue,
    ThemeCatalogueError,
    ThemeTag,
    UnknownThemesError,
)

TAGS = ["action", "comedy", "dark", "funny", "space", "vintage"]


def theme(theme_id: str, tags: dict[int, float], **stats: float) -> dict[str, Any]:
    """A theme entry as written by the exporter (tag names from TAGS)."""
    entry: dict[str, Any] = {
        "theme_id": theme_id,
        "title": theme_id.upper(),
        "tags": [{"tag_id": t, "tag": TAGS[t], "weight": w} for t, w in tags.items()],
    }
    if stats:
        entry["stats"] = stats
    return entry


def small_dict() -> dict[str, Any]:
    """8 themes of 1–3 tags over 6 tags; weights sum to 1 as in real catalogues."""
    return {
        "format_version": 1,
        "dataset": "test",
        "n_tags": len(TAGS),
        "params": {"anything": [1, 2]},
        "themes": [
            theme("space", {4: 1.0}, ctr=0.5, popularity=0.1),
            theme("dark-comedy", {2: 0.6, 1: 0.4}, ctr=0.9, popularity=0.05),
            theme("action", {0: 1.0}, ctr=0.7, popularity=0.3),
            theme("funny-comedy", {3: 0.5, 1: 0.5}, ctr=0.9, popularity=0.2),
            theme("vintage", {5: 1.0}, popularity=0.4),
            theme("space-action", {4: 0.7, 0: 0.2, 5: 0.1}, ctr=0.2),
            theme("dark", {2: 1.0}, ctr=0.95, popularity=0.01),
            theme("retro-fun", {5: 0.5, 3: 0.3, 2: 0.2}, ctr=0.6, popularity=0.15),
        ],
    }


def dense_weights(data: dict[str, Any], n_tags: int) -> np.ndarray:
    """W[theme, tag] in float64, built straight from the dict (independent of the module)."""
    weights = np.zeros((len(data["themes"]), n_tags))
    for row, entry in enumerate(data["themes"]):
        for item in entry["tags"]:
            weights[row, item["tag_id"]] = item["weight"]
    return weights


def brute_force(
    data: dict[str, Any], n_tags: int, scores: np.ndarray, k: int, rows: list[int] | None = None
) -> tuple[list[str], list[float]]:
    """Top k ids and scores of ``W @ scores`` (descending, ties by file order)."""
    exact = dense_weights(data, n_tags) @ np.asarray(scores, dtype=np.float32).astype(np.float64)
    rows = list(range(len(exact))) if rows is None else rows
    order = sorted(rows, key=lambda row: (-exact[row], row))[:k]
    return [data["themes"][row]["theme_id"] for row in order], [float(exact[r]) for r in order]


def ids_of(ranked: list[RankedTheme]) -> list[str]:
    return [item.theme_id for item in ranked]


@pytest.fixture(scope="module")
def small() -> ThemeCatalogue:
    return ThemeCatalogue.from_dict(small_dict(), TAGS, use_gpu=False)


def random_dict(rng: np.random.Generator, n_themes: int, n_tags: int) -> dict[str, Any]:
    """Random themes of 1–3 distinct tags with weights summing to 1 (names omitted)."""
    themes = []
    for index in range(n_themes):
        size = int(rng.integers(1, 4))
        tag_ids = rng.choice(n_tags, size=size, replace=False)
        weights = rng.dirichlet(np.ones(size))
        themes.append(
            {
                "theme_id": f"th{index:04d}",
                "title": f"Theme {index}",
                "tags": [
                    {"tag_id": int(t), "weight": float(w)}
                    for t, w in zip(tag_ids, weights, strict=True)
                ],
            }
        )
    return {"format_version": 1, "n_tags": n_tags, "themes": themes}


# --------------------------------------------------------------------------- ranking


def test_hand_checked_tiny_case() -> None:
    data = {
        "themes": [
            theme("a", {0: 1.0}),
            theme("bc", {1: 0.5, 2: 0.5}),
            theme("cd", {2: 0.25, 3: 0.75}),
        ]
    }
    catalogue = ThemeCatalogue.from_dict(data, TAGS, use_gpu=False)
    scores = np.array([0.5, 1.0, 0.0, 0.8, 0.0, 0.0], dtype=np.float32)
    # a = 0.5, bc = 0.5 * 1.0 + 0.5 * 0 = 0.5 (tie with a: file order), cd = 0.75 * 0.8 = 0.6
    for ranked in (catalogue.rank(scores, 3), catalogue.rank(scores, 3, ["bc", "a", "cd"])):
        assert ids_of(ranked) == ["cd", "a", "bc"]
        assert [r.score for r in ranked] == pytest.approx([0.6, 0.5, 0.5], abs=1e-7)
        assert ranked[0] == RankedTheme(
            theme_id="cd",
            title="CD",
            score=ranked[0].score,
            tags=(
                ThemeTag(tag_id=3, tag="funny", weight=0.75, contribution=ranked[0].score),
                ThemeTag(tag_id=2, tag="dark", weight=0.25, contribution=0.0),
            ),
        )
    assert ids_of(catalogue.rank(scores, 1)) == ["cd"]
    assert ids_of(catalogue.rank(scores, 2, ["bc", "a"])) == ["a", "bc"]


def test_small_catalogue_matches_brute_force(small: ThemeCatalogue) -> None:
    data = small_dict()
    rng = np.random.default_rng(1)
    for _ in range(10):
        scores = rng.random(len(TAGS), dtype=np.float32)
        for k in (1, 3, 8, 50):
            want_ids, want_scores = brute_force(data, len(TAGS), scores, k)
            got = small.rank(scores, k)
            assert ids_of(got) == want_ids
            assert [r.score for r in got] == pytest.approx(want_scores, abs=1e-6)
            rows = [6, 0, 3, 5]
            candidates = [data["themes"][row]["theme_id"] for row in rows]
            want_ids, want_scores = brute_force(data, len(TAGS), scores, k, rows)
            got = small.rank(scores, k, candidates)
            assert ids_of(got) == want_ids
            assert [r.score for r in got] == pytest.approx(want_scores, abs=1e-6)


def test_random_catalogue_retrieval_equals_brute_force() -> None:
    rng = np.random.default_rng(7)
    n_tags = 50
    data = random_dict(rng, n_themes=300, n_tags=n_tags)
    names = [f"tag{i}" for i in range(n_tags)]
    catalogue = ThemeCatalogue.from_dict(data, names, use_gpu=False)
    batch = rng.random((20, n_tags), dtype=np.float32)
    per_row = []
    for scores in batch:
        want_ids, want_scores = brute_force(data, n_tags, scores, 10)
        got = catalogue.rank(scores, 10)
        assert ids_of(got) == want_ids
        assert [r.score for r in got] == pytest.approx(want_scores, abs=1e-6)
        # Every ranked theme, retrieved or re-ranked, has the same exact score.
        again = catalogue.rank(scores, 10, list(reversed(want_ids)))
        assert again == got
        per_row.append(got)
    assert catalogue.rank_batch(batch, 10) == per_row


def test_exact_rescoring_corrects_float32_ties() -> None:
    """faiss sees float32 weights: 0.1 and float32(0.1) both become float32(0.1), a tie it
    resolves by id. The exact score of ``best`` (1.0 · float32(0.1)) is higher than that of
    the 20 ``near`` themes (0.1 · 1.0), so ``best`` must come first although it is last in
    the file and beyond faiss's k + margin proposals."""
    near = [theme(f"near{i}", {1: 0.1, 2: 0.9}) for i in range(20)]
    filler = [theme(f"fill{i}", {3: 1.0}) for i in range(10)]
    data = {"themes": [*near, *filler, theme("best", {0: 1.0})]}
    catalogue = ThemeCatalogue.from_dict(data, TAGS, use_gpu=False)
    scores = np.array([0.1, 1.0, 0.0, 0.0, 0.0, 0.0], dtype=np.float32)
    assert float(scores[0]) > 0.1  # float32(0.1) rounds up
    want_ids, _ = brute_force(data, len(TAGS), scores, 3)
    assert want_ids == ["best", "near0", "near1"]
    assert ids_of(catalogue.rank(scores, 3)) == want_ids
    assert ids_of(catalogue.rank_batch(scores[None, :], 3)[0]) == want_ids
    assert ids_of(catalogue.rank(scores, 3, ["near1", "best", "near0", "fill0"])) == want_ids


def test_ties_follow_file_order_on_both_paths() -> None:
    # 120 single-tag themes, tag i % 3: 40 exact ties per tag, more than k + margin.
    data = {"themes": [theme(f"t{i:03d}", {i % 3: 1.0}) for i in range(120)]}
    catalogue = ThemeCatalogue.from_dict(data, TAGS, use_gpu=False)
    scores = np.array([0.5, 0.25, 0.75, 0, 0, 0], dtype=np.float32)
    want = [f"t{i:03d}" for i in range(2, 120, 3)][:10]
    assert ids_of(catalogue.rank(scores, 10)) == want
    assert ids_of(catalogue.rank(scores, 10, list(reversed(catalogue.ids)))) == want
    # All scores equal: everything ties, file order decides.
    flat = np.full(len(TAGS), 0.5, dtype=np.float32)
    assert ids_of(catalogue.rank(flat, 5)) == ["t000", "t001", "t002", "t003", "t004"]
    assert ids_of(catalogue.rank(flat, 5, ["t009", "t004", "t007"])) == ["t004", "t007", "t009"]


def test_because_tags_sorted_by_contribution(small: ThemeCatalogue) -> None:
    rng = np.random.default_rng(3)
    checked = 0
    for _ in range(5):
        scores = rng.random(len(TAGS), dtype=np.float32)
        for ranked in small.rank(scores, len(small)):
            stored = small.get(ranked.theme_id)
            assert stored is not None
            assert sorted(t.tag_id for t in ranked.tags) == sorted(stored.tag_ids)
            keys = [(-t.contribution, t.tag_id) for t in ranked.tags]
            assert keys == sorted(keys)
            for tag in ranked.tags:
                assert tag.tag == TAGS[tag.tag_id]
                assert tag.weight == stored.weights[stored.tag_ids.index(tag.tag_id)]
                assert tag.contribution == pytest.approx(tag.weight * float(scores[tag.tag_id]))
            assert sum(t.contribution for t in ranked.tags) == pytest.approx(ranked.score)
            checked += len(ranked.tags) > 1
    assert checked > 0
    # Equal contributions: tag id decides.
    tied = small.rank(np.zeros(len(TAGS), dtype=np.float32), 1, ["retro-fun"])[0]
    assert [t.tag_id for t in tied.tags] == [2, 3, 5]


def test_unknown_candidates_and_duplicates(small: ThemeCatalogue) -> None:
    scores = np.linspace(0, 1, len(TAGS), dtype=np.float32)
    with pytest.raises(UnknownThemesError) as info:
        small.rank(scores, 3, ["nope", "space", "gone", "nope", "dark"])
    assert info.value.ids == ["nope", "gone"]
    assert isinstance(info.value, ThemeCatalogueError)
    assert "'nope', 'gone'" in str(info.value)
    assert small.unknown(["x", "space", "y", "x"]) == ["x", "y"]
    assert small.unknown(["space", "dark"]) == []
    ranked = small.rank(scores, 10, ["dark", "space", "dark", "space"])
    assert sorted(ids_of(ranked)) == ["dark", "space"]
    assert small.rank(scores, 3, []) == []
    with pytest.raises(TypeError):
        small.rank(scores, 3, "space")


def test_lookup_and_matrix(small: ThemeCatalogue) -> None:
    data = small_dict()
    assert len(small) == 8
    assert small.ids == tuple(entry["theme_id"] for entry in data["themes"])
    found = small.get("space-action")
    assert found == Theme(
        theme_id="space-action",
        title="SPACE-ACTION",
        tag_ids=(4, 0, 5),
        tag_names=("space", "action", "vintage"),
        weights=(0.7, 0.2, 0.1),
        stats={"ctr": 0.2},
    )
    assert small.get("missing") is None
    with pytest.raises(TypeError):
        found.stats["ctr"] = 1.0  # type: ignore[index]
    unnamed = {"themes": [{"theme_id": "x", "title": "X", "tags": [{"tag_id": 1, "weight": 1}]}]}
    bare = ThemeCatalogue.from_dict(unnamed, TAGS, use_gpu=False).get("x")
    assert bare is not None
    assert bare.stats == {}
    assert bare.tag_names == ("comedy",)
    matrix = small.matrix
    assert matrix.shape == (8, len(TAGS))
    assert matrix.dtype == np.float32
    np.testing.assert_allclose(matrix.toarray(), dense_weights(data, len(TAGS)), rtol=1e-7)
    matrix.data[:] = 0  # a copy: the catalogue is unaffected
    assert small.matrix.nnz == matrix.nnz
    assert small.matrix.sum() == pytest.approx(8.0)


def test_argument_checks(small: ThemeCatalogue) -> None:
    scores = np.ones(len(TAGS), dtype=np.float32)
    for bad_k in (0, -1):
        with pytest.raises(ValueError, match="k must be"):
            small.rank(scores, bad_k)
        with pytest.raises(ValueError, match="k must be"):
            small.popular(bad_k)
    with pytest.raises(ValueError, match="shape"):
        small.rank(np.ones(len(TAGS) + 1, dtype=np.float32), 3)
    with pytest.raises(ValueError, match="shape"):
        small.rank(np.ones((1, len(TAGS)), dtype=np.float32), 3)
    with pytest.raises(ValueError, match="shape"):
        small.rank_batch(scores, 3)
    with pytest.raises(ValueError, match="finite"):
        small.rank(np.array([np.nan, 0, 0, 0, 0, 0], dtype=np.float32), 3)
    assert len(small.rank(scores, 100)) == len(small)
    assert [len(row) for row in small.rank_batch(np.ones((2, len(TAGS))), 100)] == [8, 8]
    assert small.rank_batch(np.zeros((0, len(TAGS)), dtype=np.float32), 3) == []


def test_empty_catalogue() -> None:
    empty = ThemeCatalogue.from_dict({"themes": []}, TAGS, use_gpu=False)
    scores = np.ones(len(TAGS), dtype=np.float32)
    assert len(empty) == 0
    assert empty.rank(scores, 5) == []
    assert empty.rank_batch(np.ones((2, len(TAGS))), 5) == [[], []]
    assert empty.popular(3) == []
    assert empty.matrix.shape == (0, len(TAGS))


def test_concurrent_rank_matches_serial() -> None:
    rng = np.random.default_rng(11)
    data = random_dict(rng, n_themes=200, n_tags=30)
    catalogue = ThemeCatalogue.from_dict(data, [f"t{i}" for i in range(30)], use_gpu=False)
    batch = rng.random((64, 30), dtype=np.float32)
    serial = [catalogue.rank(row, 5) for row in batch]
    with ThreadPoolExecutor(max_workers=4) as pool:
        parallel = list(pool.map(lambda row: catalogue.rank(row, 5), batch))
    assert parallel == serial


# --------------------------------------------------------------------------- popular


def test_popular_orders_by_stat_with_missing_last(small: ThemeCatalogue) -> None:
    # ctr: dark .95, dark-comedy .9 / funny-comedy .9 (file order), action .7, retro-fun .6,
    # space .5, space-action .2, vintage has none.
    by_ctr = [t.theme_id for t in small.popular(8)]
    assert by_ctr == [
        "dark",
        "dark-comedy",
        "funny-comedy",
        "action",
        "retro-fun",
        "space",
        "space-action",
        "vintage",
    ]
    assert [t.theme_id for t in small.popular(3, by="popularity")] == [
        "vintage",
        "action",
        "funny-comedy",
    ]
    assert [t.theme_id for t in small.popular(100, by="popularity")][-2:] == [
        "dark",
        "space-action",
    ]
    assert [t.theme_id for t in small.popular(2, by="nonexistent")] == ["space", "dark-comedy"]


# --------------------------------------------------------------------------- validation


def _set(path: list[Any], value: Any) -> Callable[[dict[str, Any]], Any]:
    def mutate(data: dict[str, Any]) -> None:
        target: Any = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


def _delete(path: list[Any]) -> Callable[[dict[str, Any]], Any]:
    def mutate(data: dict[str, Any]) -> None:
        target: Any = data
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return mutate


def _duplicate_tag(data: dict[str, Any]) -> None:
    data["themes"][1]["tags"].append(dict(data["themes"][1]["tags"][0]))


INVALID: list[tuple[str, Callable[[dict[str, Any]], Any], list[str]]] = [
    (
        "bad tag_id",
        _set(["themes", 3, "tags", 0, "tag_id"], 2000),
        ["themes.json: themes[3].tags[0].tag_id: 2000 is not a tag id (vocabulary has 6 tags)"],
    ),
    ("negative tag_id", _set(["themes", 0, "tags", 0, "tag_id"], -1), ["themes[0].tags[0]"]),
    (
        "bool tag_id",
        _set(["themes", 0, "tags", 0, "tag_id"], True),
        ["themes[0].tags[0].tag_id", "integer", "boolean"],
    ),
    (
        "name mismatch",
        _set(["themes", 5, "tags", 1, "tag"], "comedy"),
        ["themes.json: themes[5].tags[1].tag:", "'comedy'", "'action'", "another vocabulary"],
    ),
    (
        "duplicate theme_id",
        _set(["themes", 6, "theme_id"], "space"),
        ["themes[6].theme_id", "duplicate theme id 'space'", "themes[0]"],
    ),
    (
        "negative weight",
        _set(["themes", 1, "tags", 1, "weight"], -0.4),
        ["themes[1].tags[1].weight", "-0.4"],
    ),
    (
        "nan weight",
        _set(["themes", 1, "tags", 0, "weight"], float("nan")),
        ["themes[1].tags[0].weight", "finite"],
    ),
    (
        "string weight",
        _set(["themes", 1, "tags", 0, "weight"], "0.6"),
        ["themes[1].tags[0].weight", "expected a number, found string"],
    ),
    ("missing weight", _delete(["themes", 2, "tags", 0, "weight"]), ["themes[2].tags[0].weight"]),
    ("wrong n_tags", _set(["n_tags"], 1586), ["themes.json: n_tags: 1586", "6 tags"]),
    ("format_version", _set(["format_version"], 2), ["format_version", "unsupported", "2"]),
    ("themes not a list", _set(["themes"], {}), ["themes: expected an array, found object"]),
    ("themes missing", _delete(["themes"]), ["themes.json: themes: missing"]),
    ("theme not an object", _set(["themes", 4], "vintage"), ["themes[4]: expected an object"]),
    ("empty theme_id", _set(["themes", 2, "theme_id"], ""), ["themes[2].theme_id", "empty"]),
    ("int theme_id", _set(["themes", 2, "theme_id"], 7), ["themes[2].theme_id", "integer"]),
    ("missing title", _delete(["themes", 2, "title"]), ["themes[2].title: missing"]),
    ("title not a string", _set(["themes", 2, "title"], None), ["themes[2].title", "null"]),
    ("empty tags", _set(["themes", 7, "tags"], []), ["themes[7].tags", "at least one tag"]),
    ("tags not a list", _set(["themes", 7, "tags"], {"5": 1}), ["themes[7].tags", "array"]),
    (
        "duplicate tag",
        _duplicate_tag,
        ["themes[1].tags[2].tag_id", "tag 2 ('dark') appears twice", "themes[1].tags[0]"],
    ),
    ("stats not an object", _set(["themes", 0, "stats"], [1]), ["themes[0].stats", "object"]),
    ("stat not a number", _set(["themes", 0, "stats", "ctr"], "x"), ["themes[0].stats.ctr"]),
]


@pytest.mark.parametrize(
    ("mutate", "expected"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID]
)
def test_invalid_catalogue_names_the_place(
    mutate: Callable[[dict[str, Any]], Any], expected: list[str]
) -> None:
    data = small_dict()
    ThemeCatalogue.from_dict(copy.deepcopy(data), TAGS, use_gpu=False)  # valid before
    mutate(data)
    with pytest.raises(ThemeCatalogueError) as info:
        ThemeCatalogue.from_dict(data, TAGS, use_gpu=False)
    for fragment in expected:
        assert fragment in str(info.value)


@pytest.mark.parametrize("data", [[], "themes", None, 1])
def test_top_level_must_be_an_object(data: Any) -> None:
    with pytest.raises(ThemeCatalogueError, match=r"^mine\.json: top level: expected a JSON"):
        ThemeCatalogue.from_dict(data, TAGS, source="mine.json", use_gpu=False)


# --------------------------------------------------------------------------- load and GPU


def test_load_from_file(tmp_path: Path) -> None:
    path = tmp_path / "themes.json"
    path.write_text(json.dumps(small_dict(), indent=2), encoding="utf-8")
    loaded = ThemeCatalogue.load(path, TAGS, use_gpu=False)
    assert loaded.ids == ThemeCatalogue.from_dict(small_dict(), TAGS, use_gpu=False).ids
    scores = np.linspace(1, 0, len(TAGS), dtype=np.float32)
    assert ids_of(loaded.rank(scores, 3)) == brute_force(small_dict(), len(TAGS), scores, 3)[0]

    with pytest.raises(ThemeCatalogueError, match=r"n_tags: 6 does not match .*\(5 tags\)") as info:
        ThemeCatalogue.load(str(path), TAGS[:5], use_gpu=False)
    assert str(info.value).startswith(f"{path}: ")

    broken = tmp_path / "broken.json"
    broken.write_text('{"themes": [', encoding="utf-8")
    with pytest.raises(ThemeCatalogueError, match="not valid JSON") as info:
        ThemeCatalogue.load(broken, TAGS, use_gpu=False)
    assert str(broken) in str(info.value)
    with pytest.raises(FileNotFoundError):
        ThemeCatalogue.load(tmp_path / "absent.json", TAGS)


def test_cpu_index_when_gpu_disabled(small: ThemeCatalogue) -> None:
    assert small.on_gpu is False


def test_use_gpu_true_without_gpu_is_refused() -> None:
    if faiss.get_num_gpus() > 0:
        pytest.skip("a GPU is visible to faiss")
    with pytest.raises(ThemeCatalogueError, match="use_gpu=True but no GPU"):
        ThemeCatalogue.from_dict(small_dict(), TAGS, use_gpu=True)
    assert ThemeCatalogue.from_dict(small_dict(), TAGS).on_gpu is False  # auto: CPU


def test_gpu_index_ranks_like_cpu() -> None:
    if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() == 0:
        pytest.skip("no GPU visible to faiss")
    rng = np.random.default_rng(5)
    data = random_dict(rng, n_themes=300, n_tags=50)
    names = [f"tag{i}" for i in range(50)]
    gpu = ThemeCatalogue.from_dict(data, names, use_gpu=True)
    cpu = ThemeCatalogue.from_dict(data, names, use_gpu=False)
    assert gpu.on_gpu
    assert ThemeCatalogue.from_dict(data, names).on_gpu  # auto picks the GPU
    batch = rng.random((20, 50), dtype=np.float32)
    assert gpu.rank_batch(batch, 10) == cpu.rank_batch(batch, 10)
    assert gpu.rank(batch[0], 10) == cpu.rank(batch[0], 10)
