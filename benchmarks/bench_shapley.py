"""Benchmark of training.sve on real hetrec-movielens-2k coalitions.

Coalition = the tags one user gave one movie; that user's clicked sets = the tag sets of all
of the user's (user, movie) pairs (every HetRec pair is a positive). Reports:

1. vectorised exact enumeration vs a straightforward per-subset Python loop (itertools,
   V memoised per subset) on sampled coalitions with 2 ≤ m ≤ 12;
2. the closed form vs exact enumeration on the same coalitions;
3. batch_shapley (+ batch_sve_weights) over the whole data set vs a per-coalition loop.

Usage:
    .venv/bin/python benchmarks/bench_shapley.py \\
        [--data ../shared/datasets/hetrec2011-movielens-2k] [--credit contains|covers]
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from training.data.hetrec import load_hetrec_movielens  # noqa: E402
from training.data.ragged import Ragged  # noqa: E402
from training.sve import (  # noqa: E402
    MAX_EXACT_TAGS,
    batch_shapley,
    batch_sve_weights,
    membership_matrix,
    shapley_from_membership,
    shapley_values,
)


def python_loop_shapley(
    item_tags: list[int], sets: list[frozenset[int]], credit: str
) -> list[float]:
    """The textbook version a reader would write: every subset, V memoised per subset.

    ``sets`` are the clicked sets already intersected with the coalition (see
    :func:`python_prepare`), so the loop times the enumeration itself.
    """
    m, n = len(item_tags), len(sets)
    if n == 0:
        return [0.0] * m
    cache: dict[frozenset[int], float] = {}

    def value(subset: frozenset[int]) -> float:
        if not subset:
            return 0.0
        if subset not in cache:
            if credit == "contains":
                cache[subset] = sum(subset <= c for c in sets) / n
            else:
                cache[subset] = sum(not subset.isdisjoint(c) for c in sets) / n
        return cache[subset]

    phi = []
    for t in item_tags:
        others = [x for x in item_tags if x != t]
        total = 0.0
        for size in range(m):
            weight = math.factorial(size) * math.factorial(m - size - 1) / math.factorial(m)
            for subset in itertools.combinations(others, size):
                s = frozenset(subset)
                total += weight * (value(s | {t}) - value(s))
        phi.append(total)
    return phi


def python_prepare(item_tags: list[int], clicked: list[list[int]]) -> list[frozenset[int]]:
    """Only C ∩ M matters: intersect every clicked set with the coalition once."""
    coalition = frozenset(item_tags)
    return [coalition & frozenset(c) for c in clicked]


def timed(fn: Callable[[], object], repeat: int = 1) -> tuple[float, object]:
    """Best wall time of ``repeat`` runs, and the last result."""
    best, result = math.inf, None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main(argv: list[str] | None = None) -> None:
    default_data = ROOT.parent / "shared" / "datasets" / "hetrec2011-movielens-2k"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default_data)
    parser.add_argument("--sample", type=int, default=300, help="coalitions with 2 <= m <= 12")
    parser.add_argument("--large-sample", type=int, default=40, help="coalitions with 8<=m<=12")
    parser.add_argument("--credit", choices=["contains", "covers"], default="contains")
    parser.add_argument("--tau", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    load_time, raw = timed(lambda: load_hetrec_movielens(args.data))
    coalitions: Ragged = raw.inter_tags
    coalition_user = raw.inter_user.astype(np.int64)
    positive = np.flatnonzero(raw.inter_label == 1)
    clicked = coalitions.take(positive)
    clicked_user = coalition_user[positive]

    # per user: clicked sets as Python lists (the loop's input) and as a Ragged
    order = np.argsort(clicked_user, kind="stable")
    bounds = np.searchsorted(clicked_user[order], np.arange(raw.n_users + 1))
    user_rows = [order[bounds[u] : bounds[u + 1]] for u in range(raw.n_users)]
    user_ragged = [clicked.take(rows) for rows in user_rows]
    lengths = coalitions.lengths()
    rng = np.random.default_rng(args.seed)

    def sample(lo: int, hi: int, k: int) -> np.ndarray:
        pool = np.flatnonzero((lengths >= lo) & (lengths <= hi))
        return np.sort(rng.choice(pool, size=min(k, len(pool)), replace=False))

    samples = {
        f"{args.sample} sampled, 2≤m≤{MAX_EXACT_TAGS}": sample(2, MAX_EXACT_TAGS, args.sample),
        f"{args.large_sample} sampled, 8≤m≤{MAX_EXACT_TAGS}": sample(
            8, MAX_EXACT_TAGS, args.large_sample
        ),
    }

    rows: list[tuple[str, ...]] = []

    def add(
        what: str, method: str, given: str, seconds: float, count: int, ratio: str, diff: str
    ) -> None:
        rows.append((what, method, given, f"{seconds:.4f}", f"{count / seconds:,.0f}", ratio, diff))

    def max_diff(left: list, right: list) -> float:
        return max(float(np.abs(np.asarray(a) - b).max()) for a, b in zip(left, right, strict=True))

    credit = args.credit
    for label, picked in samples.items():
        cases = [
            (coalitions[j].tolist(), user_ragged[coalition_user[j]].to_lists()) for j in picked
        ]
        k = len(cases)
        what = (
            f"{label}: mean m {lengths[picked].mean():.1f}, "
            f"mean {np.mean([len(c) for _, c in cases]):.0f} clicked sets"
        )
        # (a) end to end, from the Python lists
        t_loop, ref = timed(
            lambda cases=cases: [
                python_loop_shapley(t, python_prepare(t, c), credit) for t, c in cases
            ]
        )
        t_exact, exact = timed(
            lambda cases=cases: [shapley_values(t, c, credit, method="exact") for t, c in cases],
            repeat=3,
        )
        t_closed, closed = timed(
            lambda cases=cases: [
                shapley_values(t, c, credit, method="closed_form") for t, c in cases
            ],
            repeat=3,
        )
        given = "Python lists"
        add(what, "Python per-subset loop", given, t_loop, k, "1×", "—")
        add(
            what,
            "exact, vectorised",
            given,
            t_exact,
            k,
            f"**{t_loop / t_exact:.0f}×** vs loop",
            f"{max_diff(ref, exact):.0e} vs loop",
        )
        add(
            what,
            "closed form",
            given,
            t_closed,
            k,
            f"{t_exact / t_closed:.1f}× vs exact",
            f"{max_diff(closed, exact):.0e} vs exact",
        )
        # (b) the enumeration alone: both start from the clicked sets intersected with M
        prepared = [(t, python_prepare(t, c)) for t, c in cases]
        matrices = [membership_matrix(t, c) for t, c in cases]
        t_loop, ref = timed(
            lambda prepared=prepared: [python_loop_shapley(t, c, credit) for t, c in prepared]
        )
        t_exact, exact = timed(
            lambda matrices=matrices: [
                shapley_from_membership(x, credit, method="exact") for x in matrices
            ],
            repeat=3,
        )
        t_closed, closed = timed(
            lambda matrices=matrices: [
                shapley_from_membership(x, credit, method="closed_form") for x in matrices
            ],
            repeat=3,
        )
        given = "C∩M prepared"
        add(what, "Python per-subset loop", given, t_loop, k, "1×", "—")
        add(
            what,
            "exact, vectorised",
            given,
            t_exact,
            k,
            f"**{t_loop / t_exact:.0f}×** vs loop",
            f"{max_diff(ref, exact):.0e} vs loop",
        )
        add(
            what,
            "closed form",
            given,
            t_closed,
            k,
            f"{t_exact / t_closed:.1f}× vs exact",
            f"{max_diff(closed, exact):.0e} vs exact",
        )

    # (3) the whole data set
    n_coal = len(coalitions)
    t_each, each = timed(
        lambda: np.concatenate(
            [
                shapley_values(
                    coalitions[j], user_ragged[coalition_user[j]], credit, method="closed_form"
                )
                for j in range(n_coal)
            ]
        )
    )
    t_batch, phi = timed(
        lambda: batch_shapley(coalitions, coalition_user, clicked, clicked_user, credit),
        repeat=3,
    )
    t_weights, _ = timed(lambda: batch_sve_weights(phi, coalitions.offsets, args.tau), repeat=3)
    what = (
        f"whole data set: {n_coal:,} coalitions (m ≤ {lengths.max()}), "
        f"{len(clicked):,} clicked sets, {raw.n_users:,} users"
    )
    given = "Ragged"
    add(what, "per-coalition loop of shapley_values(closed_form)", given, t_each, n_coal, "1×", "—")
    add(
        what,
        "batch_shapley (one global sparse product)",
        given,
        t_batch,
        n_coal,
        f"**{t_each / t_batch:.0f}×** vs loop",
        f"{np.abs(phi - each).max():.0e} vs loop",
    )
    add(what, f"batch_sve_weights (τ = {args.tau})", given, t_weights, n_coal, "—", "—")

    print(f"# Shapley benchmark (credit = {args.credit})\n")
    print("| coalitions | method | input | wall s | coalitions/s | ratio | max abs diff |")
    print("|---|---|---|---:|---:|---:|---:|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()
    print(f"- data: {args.data} (loaded in {load_time:.2f} s)")
    print(
        f"- machine: {platform.platform()}, {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, numpy {np.__version__}"
    )
    print("- timings: best of 3 for vectorised code, a single run for the Python loops")
    print(f"- command: {shlex.join([os.path.relpath(sys.executable), *sys.argv])}")


if __name__ == "__main__":
    main()
