"""The two data files of a model bundle (DESIGN §5, §7): ``themes.json`` and ``users.jsonl``.

``themes.json`` is the catalogue the A/B test ranks: a theme is a card that groups items by
one to three frequent, co-occurring tags ("Tense, Atmospheric & Stylized"). It is mined from
the train users' observed positives only, so no valid/test interaction leaks into what the
service shows, and its ``stats`` (popularity, CTR) are what the ``popular`` control arm ranks
by. ``users.jsonl`` holds every user's features in the feature-store form the service loads
(the same bags the model was trained on, padding stripped), optionally with the held-out
truth the A/B simulator clicks by.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from training.data.processed import SPLITS, TRAIN, ProcessedDataset
from training.data.ragged import Ragged
from training.features import user_features

FORMAT_VERSION = 1
_DIGITS = 6  # decimals of every float written


@dataclass
class _Pool:
    """Candidate themes of one size: tag ids [m, size] (ascending), support and users [m]."""

    tags: np.ndarray
    support: np.ndarray
    users: np.ndarray

    def __len__(self) -> int:
        return len(self.support)


# --------------------------------------------------------------------------- themes
def build_themes(
    data: ProcessedDataset,
    *,
    max_themes: int = 200,
    min_support: int = 5,
    seed: int = 0,
    max_per_tag: int = 3,
    min_users: int = 3,
    min_lift: float = 2.0,
    mix: tuple[float, float, float] = (0.5, 0.3, 0.2),
) -> dict[str, Any]:
    """Mine a diverse theme catalogue from the train users' observed positive interactions.

    Candidates are single tags, pairs and triples whose tags all occur together on at least
    ``min_support`` interactions of at least ``min_users`` distinct users (a theme is a shared
    interest, not one user's private labels). A pair must have lift
    ``support·N / (count_a·count_b) >= min_lift``, so two merely popular tags do not make a
    theme; a triple must have all three sub-pairs valid and lift ``>= min_lift`` for each
    way of adding one tag to a pair (every tag adds information). Tags whose names normalise
    to the same text ("Sci-Fi", "scifi") never share a theme.

    Selection is greedy over the three pools ranked by distinct users (then support, then a
    ``seed``-ed tie-break), interleaved in the proportions ``mix`` (singles, pairs, triples;
    a pool that runs out leaves its slots to the others). A candidate is skipped when one of
    its tags already appears in ``max_per_tag`` themes, when a theme with the same tag names
    exists, or when it is a subset/superset of a chosen multi-tag theme.

    Stats per theme: ``support`` (interactions whose tags include all the theme's tags),
    ``users`` (distinct train users among them), ``popularity`` (``users`` / train users),
    ``exposures`` (interactions of train users, clicked or not, on items carrying all the
    theme's tags), ``clicks`` (the observed positives among them) and ``ctr`` =
    clicks / exposures. For data without explicit negatives the protocol's sampled
    negatives are the only unclicked exposures, so such a CTR is relative (comparable
    between themes of one data set), not a real click-through rate. Tag weights are
    proportional to each tag's positive count: the broader tag carries more of the theme.
    """
    _check_params(max_themes, min_support, max_per_tag, min_users, min_lift, mix)
    users = data.inter_user
    train = data.user_split[users] == TRAIN
    rows = np.flatnonzero(train & (data.inter_label == 1) & ~data.inter_sampled)
    incidence = _incidence(data.inter_tags.take(rows), data.n_tags)  # [n, T] 0/1
    by_user = Ragged.from_pairs(users[rows], np.arange(len(rows)), data.n_users)
    owners = _incidence(by_user, len(rows))  # [U, n]: which user owns each row
    keys = [_name_key(name) for name in data.tag_names]
    pools = _candidates(incidence, owners, keys, min_support, min_users, min_lift)
    chosen = _select(pools, keys, max_themes, max_per_tag, mix, seed)

    counts = np.asarray(incidence.sum(axis=0)).ravel()
    n_train_users = int((data.user_split == TRAIN).sum())
    stats = _theme_stats(data, chosen, incidence, owners, train)
    order = sorted(range(len(chosen)), key=lambda k: (-stats["users"][k], -stats["support"][k], k))
    themes = []
    for rank, k in enumerate(order, start=1):
        tags = chosen[k]
        weights = counts[tags] / counts[tags].sum()
        by_weight = sorted(range(len(tags)), key=lambda j: (-weights[j], tags[j]))
        tag_list = [
            {"tag_id": int(tags[j]), "tag": data.tag_names[tags[j]], "weight": float(weights[j])}
            for j in by_weight
        ]
        _round_weights(tag_list)
        clicks, exposures = int(stats["clicks"][k]), int(stats["exposures"][k])
        themes.append(
            {
                "theme_id": f"th{rank:04d}",
                "title": _title([data.tag_names[tags[j]] for j in by_weight]),
                "tags": tag_list,
                "stats": {
                    "support": int(stats["support"][k]),
                    "users": int(stats["users"][k]),
                    "popularity": round(int(stats["users"][k]) / max(n_train_users, 1), _DIGITS),
                    "clicks": clicks,
                    "exposures": exposures,
                    "ctr": round(clicks / exposures, _DIGITS) if exposures else 0.0,
                },
            }
        )
    return {
        "format_version": FORMAT_VERSION,
        "dataset": data.meta["dataset"],
        "n_tags": data.n_tags,
        "params": {
            "max_themes": max_themes,
            "min_support": min_support,
            "min_users": min_users,
            "min_lift": min_lift,
            "max_per_tag": max_per_tag,
            "mix": list(mix),
            "seed": seed,
        },
        "themes": themes,
    }


def _check_params(
    max_themes: int,
    min_support: int,
    max_per_tag: int,
    min_users: int,
    min_lift: float,
    mix: tuple[float, float, float],
) -> None:
    for name, value, minimum in (
        ("max_themes", max_themes, 0),
        ("min_support", min_support, 1),
        ("max_per_tag", max_per_tag, 1),
        ("min_users", min_users, 1),
    ):
        if value < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if not min_lift >= 0:
        raise ValueError(f"min_lift must be >= 0, got {min_lift}")
    if len(mix) != 3 or min(mix) < 0 or sum(mix) <= 0:
        raise ValueError(f"mix must be three non-negative shares with a positive sum, got {mix}")


def _incidence(rows: Ragged, n_cols: int) -> sp.csr_matrix:
    """0/1 CSR matrix of a ragged array (duplicates within a row count once)."""
    matrix = sp.csr_matrix(
        (np.ones(len(rows.values), dtype=np.int64), rows.values, rows.offsets),
        shape=(len(rows), n_cols),
    )
    matrix.sum_duplicates()
    matrix.data[:] = 1
    return matrix


def _name_key(name: str) -> str:
    """What makes two tag names "the same" in a title: case and punctuation ignored."""
    key = re.sub(r"[\W_]+", "", name.casefold())
    return key or name.casefold().strip()


def _distinct_users(owners: sp.csr_matrix, hits: sp.spmatrix) -> np.ndarray:
    """Per column of ``hits`` [n, m] (0/1 per interaction), how many users own its rows."""
    return np.asarray((owners @ hits).getnnz(axis=0), dtype=np.int64)


def _candidates(
    incidence: sp.csr_matrix,
    owners: sp.csr_matrix,
    keys: list[str],
    min_support: int,
    min_users: int,
    min_lift: float,
) -> list[_Pool]:
    """Single tags, pairs and triples that pass support, users and lift (vectorised)."""
    n = incidence.shape[0]
    columns = incidence.tocsc()
    counts = np.asarray(incidence.sum(axis=0)).ravel().astype(np.int64)
    tag_users = _distinct_users(owners, columns)
    single = np.flatnonzero((counts >= min_support) & (tag_users >= min_users))
    singles = _Pool(single[:, None], counts[single], tag_users[single])

    co = sp.triu(incidence.T @ incidence, k=1).tocoo()
    a, b, s = co.row.astype(np.int64), co.col.astype(np.int64), co.data.astype(np.int64)
    keep = s >= min_support
    a, b, s = a[keep], b[keep], s[keep]
    lift = s * n / (counts[a] * counts[b]).astype(np.float64)
    same_name = np.unique(np.asarray(keys, dtype=object), return_inverse=True)[1]
    keep = (lift >= min_lift) & (same_name[a] != same_name[b])
    a, b, s = a[keep], b[keep], s[keep]
    order = np.lexsort((b, a))
    a, b, s = a[order], b[order], s[order]
    both = columns[:, a].multiply(columns[:, b]).tocsc()  # [n, pairs]: rows with a and b
    pair_users = _distinct_users(owners, both)
    ok = pair_users >= min_users
    pairs = _Pool(np.stack([a[ok], b[ok]], axis=1), s[ok], pair_users[ok])

    # triples: a valid pair (a, b) plus a tag c > b, with (a, c) and (b, c) valid pairs too
    n_tags = incidence.shape[1]
    pair_key = a * n_tags + b  # sorted, as pairs are sorted by (a, b)
    tri = (both.T @ incidence).tocoo()
    p, c, st = tri.row.astype(np.int64), tri.col.astype(np.int64), tri.data.astype(np.int64)
    keep = (c > b[p]) & (st >= min_support)
    p, c, st = p[keep], c[keep], st[keep]
    s_ac = _lookup(pair_key, s, a[p] * n_tags + c)
    s_bc = _lookup(pair_key, s, b[p] * n_tags + c)
    keep = (s_ac > 0) & (s_bc > 0)
    p, c, st, s_ac, s_bc = p[keep], c[keep], st[keep], s_ac[keep], s_bc[keep]
    ta, tb = a[p], b[p]
    lift3 = np.minimum.reduce(
        [
            st * n / (s[p] * counts[c]).astype(np.float64),
            st * n / (s_ac * counts[tb]).astype(np.float64),
            st * n / (s_bc * counts[ta]).astype(np.float64),
        ]
    )
    keep = lift3 >= min_lift
    p, c, st, ta, tb = p[keep], c[keep], st[keep], ta[keep], tb[keep]
    triple_users = _distinct_users(owners, both[:, p].multiply(columns[:, c]).tocsc())
    ok = triple_users >= min_users
    triples = _Pool(np.stack([ta[ok], tb[ok], c[ok]], axis=1), st[ok], triple_users[ok])
    return [singles, pairs, triples]


def _lookup(sorted_keys: np.ndarray, values: np.ndarray, query: np.ndarray) -> np.ndarray:
    """``values`` at ``query`` keys, 0 where a key is absent."""
    if len(sorted_keys) == 0:
        return np.zeros(len(query), dtype=values.dtype)
    at = np.minimum(np.searchsorted(sorted_keys, query), len(sorted_keys) - 1)
    return np.where(sorted_keys[at] == query, values[at], 0)


def _select(
    pools: list[_Pool],
    keys: list[str],
    max_themes: int,
    max_per_tag: int,
    mix: tuple[float, float, float],
    seed: int,
) -> list[np.ndarray]:
    """Greedy diverse pick over the pools, interleaved in the proportions ``mix``."""
    rng = np.random.default_rng(seed)
    queue: list[tuple[float, int, int, np.ndarray]] = []
    for size, (pool, share) in enumerate(zip(pools, mix, strict=True)):
        tiebreak = rng.permutation(len(pool))
        if share <= 0 or len(pool) == 0:
            continue
        ranked = np.lexsort((tiebreak, -pool.support, -pool.users))
        for rank, i in enumerate(ranked):
            queue.append(((rank + 1) / share, size, rank, pool.tags[i]))
    queue.sort(key=lambda entry: entry[:3])
    uses: dict[int, int] = {}
    titles: set[frozenset[str]] = set()
    multi: list[set[int]] = []
    chosen: list[np.ndarray] = []
    for _, _, _, tags in queue:
        if len(chosen) >= max_themes:
            break
        ids = [int(t) for t in tags]
        title = frozenset(keys[t] for t in ids)
        if any(uses.get(t, 0) >= max_per_tag for t in ids) or title in titles:
            continue
        if len(ids) > 1 and any(set(ids) <= m or set(ids) >= m for m in multi):
            continue
        for t in ids:
            uses[t] = uses.get(t, 0) + 1
        titles.add(title)
        if len(ids) > 1:
            multi.append(set(ids))
        chosen.append(np.asarray(ids, dtype=np.int64))
    return chosen


def _theme_stats(
    data: ProcessedDataset,
    chosen: list[np.ndarray],
    incidence: sp.csr_matrix,
    owners: sp.csr_matrix,
    train: np.ndarray,
) -> dict[str, np.ndarray]:
    """support/users from the train positives, clicks/exposures from items' tags."""
    k = len(chosen)
    sizes = np.array([len(t) for t in chosen], dtype=np.int64)
    theme_matrix = _incidence(Ragged.from_lists(chosen), data.n_tags)  # [K, T]

    def full_matches(matrix: sp.csr_matrix) -> sp.csc_matrix:
        """0/1 [rows, K]: the row carries every tag of theme k."""
        overlap = (matrix @ theme_matrix.T).tocoo()
        hit = overlap.data == sizes[overlap.col]
        return sp.csc_matrix(
            (np.ones(int(hit.sum()), dtype=np.int64), (overlap.row[hit], overlap.col[hit])),
            shape=(matrix.shape[0], k),
        )

    matches = full_matches(incidence)
    support = np.asarray(matches.sum(axis=0)).ravel()
    users = _distinct_users(owners, matches) if k else np.zeros(0, dtype=np.int64)
    carries = full_matches(_incidence(data.item_tags, data.n_tags))  # [I, K]
    shown = data.inter_item[train]
    clicked = data.inter_item[train & (data.inter_label == 1) & ~data.inter_sampled]
    exposures = carries.T @ np.bincount(shown, minlength=data.n_items)
    clicks = carries.T @ np.bincount(clicked, minlength=data.n_items)
    return {
        "support": support,
        "users": users,
        "exposures": np.asarray(exposures).ravel(),
        "clicks": np.asarray(clicks).ravel(),
    }


def _round_weights(tags: list[dict[str, Any]]) -> None:
    """Round weights to 6 decimals keeping their sum exactly 1 (the largest absorbs it)."""
    for tag in tags:
        tag["weight"] = round(tag["weight"], _DIGITS)
    tags[0]["weight"] = round(1.0 - sum(t["weight"] for t in tags[1:]), _DIGITS)


def _title(names: list[str]) -> str:
    """'Tense, Atmospheric & Stylized': first letters capitalised, duplicates dropped."""
    shown: list[str] = []
    seen: set[str] = set()
    for name in names:
        text = " ".join(name.split())
        key = _name_key(text)
        if not text or key in seen:
            continue
        seen.add(key)
        shown.append(text[:1].upper() + text[1:])
    if not shown:
        return "Untitled"
    if len(shown) == 1:
        return shown[0]
    return ", ".join(shown[:-1]) + " & " + shown[-1]


# --------------------------------------------------------------------------- users
def user_feature_records(
    data: ProcessedDataset, max_history: int, *, include_truth: bool = False
) -> Iterator[dict[str, Any]]:
    """One feature-store record per user: the model's input bags without their padding.

    ``features`` holds ``hist_tags``/``hist_tags_w``, ``hist_<field>``/``hist_<field>_w`` for
    each privileged field and ``attributes`` (value + 1, 0 unknown), exactly what
    :func:`training.features.user_features` feeds the model, so the service rebuilds the
    same tensors. ``truth_tags`` (sorted tag ids of the user's observed positive sample
    interactions) is added only with ``include_truth``: the A/B simulator needs it, the
    service must not see it.
    """
    features = user_features(data, max_history)
    bags = {"hist_tags": features.tags}
    bags.update({f"hist_{field}": bag for field, bag in features.privileged.items()})
    truth = _truth_tags(data) if include_truth else None
    for u, user_id in enumerate(data.user_ids):
        record_features: dict[str, list] = {}
        for name, bag in bags.items():
            keep = bag.weights[u] > 0
            record_features[name] = bag.ids[u][keep].tolist()
            record_features[f"{name}_w"] = [
                round(w, _DIGITS) for w in bag.weights[u][keep].tolist()
            ]
        record_features["attributes"] = features.attributes[u].tolist()
        record: dict[str, Any] = {
            "user_id": user_id,
            "split": SPLITS[int(data.user_split[u])],
            "features": record_features,
        }
        if truth is not None:
            record["truth_tags"] = truth[u].tolist()
        yield record


def _truth_tags(data: ProcessedDataset) -> Ragged:
    """Per user, the distinct tags of its observed positive sample interactions."""
    rows = np.flatnonzero(data.inter_is_sample & (data.inter_label == 1) & ~data.inter_sampled)
    coalitions = data.inter_tags.take(rows)
    owner = np.repeat(data.inter_user[rows], coalitions.lengths())
    return Ragged.from_pairs(owner, coalitions.values, data.n_users)


def write_users_jsonl(path: Path | str, records: Iterable[dict[str, Any]]) -> int:
    """Write one compact JSON record per line, atomically; returns how many were written."""
    count = 0

    def lines() -> Iterator[str]:
        nonlocal count
        for record in records:
            count += 1
            yield json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"

    _write_atomic(Path(path), lines())
    return count


def write_themes_json(path: Path | str, themes: dict[str, Any]) -> None:
    """Write the theme catalogue (indented, UTF-8) atomically."""
    _write_atomic(Path(path), [json.dumps(themes, indent=2, ensure_ascii=False) + "\n"])


def _write_atomic(path: Path, chunks: Iterable[str]) -> None:
    """Write to ``<path>.tmp`` then rename: readers never see a half-written file."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tmp.open("w", encoding="utf-8") as handle:
            handle.writelines(chunks)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
