"""Shapley values of item tags and SVE sample weights (DESIGN §2, CTMVM paper §3.2).

For a clicked item of user u with tag coalition M (m = |M|) and the user's clicked tag sets
C_1..C_n (the tag sets of u's positive interactions), the credit of a subset S ⊆ M is

- ``"contains"``: V(S) = fraction of the C_i with S ⊆ C_i (S non-empty), V(∅) = 0;
- ``"covers"``:   V(S) = fraction of the C_i with S ∩ C_i ≠ ∅, V(∅) = 0;

and φ_k = Σ_{S ⊆ M\\{t_k}} |S|!(m−|S|−1)!/m! · [V(S ∪ {t_k}) − V(S)].

Only a_i = C_i ∩ M matters. Both credits are the mean of one game per clicked set, and the
Shapley value is linear, so φ is the mean of the per-set Shapley values, which have closed
forms (derived by counting the orderings in which t_k's arrival changes the set's game):

- contains, one set with A = C ∩ M, a = |A|: v(S) = [∅ ≠ S ⊆ A]. A tag in A gains 1 only when
  it comes first (probability 1/m); a tag outside A loses 1 when everything before it is a
  non-empty part of A (probability 1/(m−a) − 1/m = a/(m(m−a))). So
  φ_k = [t_k ∈ A]/m − [t_k ∉ A]·a/(m(m−a))   (no tag is outside A when a = m).
- covers: v(S) = [S ∩ A ≠ ∅]; a tag of A gains 1 when it is the first of A to arrive
  (probability 1/a), other tags never change anything: φ_k = [t_k ∈ A]/a.

Efficiency holds per set: Σ_k φ_k = [M ⊆ C] (contains) and [a > 0] (covers), i.e. V(M).

With no clicked sets the credit is 0 everywhere, hence φ = 0 (we return zeros rather than
dividing by n = 0). This module is pure numpy/scipy, no I/O.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp

from training.data.ragged import Ragged

Credit = Literal["contains", "covers"]
Method = Literal["auto", "exact", "closed_form", "monte_carlo"]

CREDITS: tuple[str, ...] = ("contains", "covers")
METHODS: tuple[str, ...] = ("auto", "exact", "closed_form", "monte_carlo")

MAX_EXACT_TAGS = 12
"""Exact enumeration touches 2^m subsets; 2^12 = 4096 keeps it a few hundred microseconds."""

DEFAULT_PERMUTATIONS = 5000
"""Monte Carlo default. Every marginal contribution lies in [−1, 1] (V is a fraction), so the
standard error of each φ_k is at most 1/√P ≈ 0.014 for P = 5000 (usually far less)."""

_MC_CHUNK_ELEMENTS = 1 << 23  # booleans per Monte Carlo chunk (patterns × permutations × m)


# --------------------------------------------------------------------------------------------
# Per-coalition API
# --------------------------------------------------------------------------------------------


def _check_credit(credit: str) -> None:
    if credit not in CREDITS:
        raise ValueError(f"unknown credit {credit!r}; expected one of {CREDITS}")


def membership_matrix(
    item_tags: Sequence[Any], clicked_tag_sets: Iterable[Iterable[Any]]
) -> np.ndarray:
    """Bool matrix X [n, m]: X[i, k] = (item_tags[k] ∈ clicked set i).

    Everything the credits need (only C_i ∩ M matters). Integer tags take a vectorised path;
    any other hashable tags (e.g. strings) work through a dict.
    """
    tags = list(item_tags)
    position = {t: k for k, t in enumerate(tags)}
    if len(position) != len(tags):
        raise ValueError("item_tags must be distinct (a coalition is a set of tags)")
    m = len(tags)
    if isinstance(clicked_tag_sets, Ragged):
        return _membership_int(tags, clicked_tag_sets.lengths(), clicked_tag_sets.values)
    if not isinstance(clicked_tag_sets, Sequence):
        clicked_tag_sets = list(clicked_tag_sets)
    if m and all(isinstance(t, int | np.integer) for t in tags):
        # fast path for integer ids: flatten in C, then match with searchsorted
        try:
            lengths = np.fromiter(map(len, clicked_tag_sets), np.int64, len(clicked_tag_sets))
            flat = np.array(list(itertools.chain.from_iterable(clicked_tag_sets)))
        except (TypeError, ValueError, OverflowError):
            pass  # rows without len(): the general path below
        else:
            # only genuine integer ids (no floats, strings or bools) take the fast path
            if len(flat) == lengths.sum() and (len(flat) == 0 or flat.dtype.kind in "iu"):
                return _membership_int(tags, lengths, flat.astype(np.int64, copy=False))
    rows: list[int] = []
    cols: list[int] = []
    n = 0
    for i, clicked in enumerate(clicked_tag_sets):
        n = i + 1
        for t in clicked:
            k = position.get(t)
            if k is not None:
                rows.append(i)
                cols.append(k)
    x = np.zeros((n, m), dtype=bool)
    x[rows, cols] = True
    return x


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")


def _membership_int(tags: list[Any], lengths: np.ndarray, values: np.ndarray) -> np.ndarray:
    """:func:`membership_matrix` for integer tags given as CSR (row lengths, flat values)."""
    m = len(tags)
    x = np.zeros((len(lengths), m), dtype=bool)
    if m == 0 or len(values) == 0:
        return x
    tag_array = np.asarray(tags, dtype=np.int64)
    order = np.argsort(tag_array)
    sorted_tags = tag_array[order]
    idx = np.minimum(np.searchsorted(sorted_tags, values), m - 1)
    hit = sorted_tags[idx] == values
    rows = np.repeat(np.arange(len(lengths)), lengths)
    x[rows[hit], order[idx[hit]]] = True
    return x


@functools.lru_cache(maxsize=MAX_EXACT_TAGS + 1)
def _subset_tables(m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-m constants of the enumeration: the [2^m, m] bit matrix B (float) and the
    Shapley weights of every subset S as "S with k" (α(|S|−1)) and "S without k" (α(|S|)),
    where α(s) = s!(m−s−1)!/m! = 1/(m·C(m−1, s)). Read-only; cached (pure function of m)."""
    full = 1 << m
    bits = ((np.arange(full, dtype=np.int64)[:, None] >> np.arange(m)) & 1).astype(np.float64)
    size = bits.sum(axis=1).astype(np.int64)
    alpha = np.array([1.0 / (m * math.comb(m - 1, s)) for s in range(m)] + [0.0])
    with_k = np.where(size > 0, alpha[np.maximum(size - 1, 0)], 0.0)
    without_k = alpha[size]  # α(m) = 0: S = M leaves no tag to add
    for table in (bits, with_k, without_k):
        table.flags.writeable = False
    return bits, with_k, without_k


def _exact(x: np.ndarray, credit: str) -> np.ndarray:
    """Enumerate all 2^m subsets with bitmask arrays (no Python loop over subsets).

    V for every subset comes from a superset-sum (contains) or subset-sum (covers) transform
    of the histogram of the clicked sets' masks: O(m·2^m). Then, with B the [2^m, m] bit
    matrix, φ_k = Σ_{S∋k} α(|S|−1)V(S) − Σ_{S∌k} α(|S|)V(S) = Bᵀ(g1 + g0) − Σ g0.
    """
    n, m = x.shape
    bits, with_k, without_k = _subset_tables(m)
    masks = x @ (1 << np.arange(m))
    table = np.bincount(masks, minlength=1 << m).astype(np.float64)
    for i in range(m):
        view = table.reshape(-1, 2, 1 << i)
        if credit == "contains":
            view[:, 0, :] += view[:, 1, :]  # sum over supersets
        else:
            view[:, 1, :] += view[:, 0, :]  # sum over subsets
    if credit == "contains":
        value = table / n
        value[0] = 0.0
    else:
        # sets disjoint from S are the subsets of the complement of S (index full−1−S)
        value = (n - table[::-1]) / n
    g0 = without_k * value
    return bits.T @ (with_k * value + g0) - g0.sum()


def _closed_form(x: np.ndarray, credit: str) -> np.ndarray:
    """Mean of the per-clicked-set closed forms (module docstring). O(n·m)."""
    m = x.shape[1]
    a = x.sum(axis=1).astype(np.float64)[:, None]
    if credit == "contains":
        outside = np.divide(a, m * (m - a), out=np.zeros_like(a), where=a < m)
        per_set = np.where(x, 1.0 / m, -outside)
    else:
        per_set = np.divide(1.0, a, out=np.zeros_like(a), where=a > 0) * x
    return per_set.mean(axis=0)


def shapley_monte_carlo(
    item_tags: Sequence[Any],
    clicked_tag_sets: Iterable[Iterable[Any]],
    credit: Credit = "contains",
    *,
    n_permutations: int = DEFAULT_PERMUTATIONS,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Permutation-sampling estimate of φ and its standard error (same order as item_tags).

    φ_k is the mean, over P uniformly random orderings of M, of t_k's marginal contribution
    V(pred ∪ {t_k}) − V(pred). The returned standard error is the sample standard deviation
    of those contributions over √P; as they lie in [−1, 1] it is at most 1/√P. Vectorised:
    the clicked sets are reduced to distinct membership patterns, and the credit of every
    prefix of every permutation is a cumulative AND (contains) or OR (covers) along it.
    Deterministic for a given seed.
    """
    _check_credit(credit)
    if n_permutations < 2:
        raise ValueError(f"n_permutations must be >= 2, got {n_permutations}")
    x = membership_matrix(item_tags, clicked_tag_sets)
    return _monte_carlo(x, credit, n_permutations, seed)


def _monte_carlo(
    x: np.ndarray, credit: str, n_permutations: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    n, m = x.shape
    if m == 0 or n == 0:
        return np.zeros(m), np.zeros(m)
    patterns, counts = np.unique(x, axis=0, return_counts=True)
    share = counts / n
    rng = np.random.default_rng(seed)
    perms = rng.random((n_permutations, m)).argsort(axis=1)
    total = np.zeros(m)
    total_sq = np.zeros(m)
    accumulate = np.logical_and.accumulate if credit == "contains" else np.logical_or.accumulate
    chunk = max(1, _MC_CHUNK_ELEMENTS // (len(patterns) * m))
    for start in range(0, n_permutations, chunk):
        perm = perms[start : start + chunk]
        hit = accumulate(patterns[:, perm], axis=2)  # [patterns, perms, m]: prefix credit
        prefix_value = np.tensordot(share, hit, axes=(0, 0))  # [perms, m], V(first j+1)
        marginal = np.diff(prefix_value, axis=1, prepend=0.0)
        flat = perm.ravel()
        total += np.bincount(flat, weights=marginal.ravel(), minlength=m)
        total_sq += np.bincount(flat, weights=(marginal**2).ravel(), minlength=m)
    phi = total / n_permutations
    var = np.maximum(total_sq / n_permutations - phi**2, 0.0) * (
        n_permutations / (n_permutations - 1)
    )
    return phi, np.sqrt(var / n_permutations)


def shapley_values(
    item_tags: Sequence[Any],
    clicked_tag_sets: Iterable[Iterable[Any]],
    credit: Credit = "contains",
    *,
    method: Method = "auto",
    n_permutations: int = DEFAULT_PERMUTATIONS,
    seed: int = 0,
) -> np.ndarray:
    """Shapley value φ of every tag of one coalition, in the order of ``item_tags``.

    ``clicked_tag_sets``: the tag sets of the user's positive interactions (an iterable of
    iterables, or a :class:`Ragged`); tags outside ``item_tags`` are ignored, and an empty
    collection gives zeros (every credit is 0). Methods:

    - ``"exact"``: vectorised enumeration of all 2^m subsets; m ≤ 12 (ValueError above);
    - ``"closed_form"``: the exact per-clicked-set formulas, O(n·m), any m;
    - ``"monte_carlo"``: seeded permutation sampling (see :func:`shapley_monte_carlo`);
    - ``"auto"``: exact when m ≤ 12, else closed form.
    """
    _check_credit(credit)
    _check_method(method)
    x = membership_matrix(item_tags, clicked_tag_sets)
    return shapley_from_membership(
        x, credit, method=method, n_permutations=n_permutations, seed=seed
    )


def shapley_from_membership(
    membership: np.ndarray,
    credit: Credit = "contains",
    *,
    method: Method = "auto",
    n_permutations: int = DEFAULT_PERMUTATIONS,
    seed: int = 0,
) -> np.ndarray:
    """:func:`shapley_values` from a prepared [n, m] bool :func:`membership_matrix`.

    For callers that build the membership themselves (and for timing the enumeration
    alone); same methods, limits and zero result for n = 0.
    """
    _check_credit(credit)
    _check_method(method)
    x = np.asarray(membership, dtype=bool)
    if x.ndim != 2:
        raise ValueError(f"membership must be a 2-D [clicked sets, tags] matrix, got {x.shape}")
    n, m = x.shape
    if method == "exact" and m > MAX_EXACT_TAGS:
        raise ValueError(
            f"exact Shapley enumeration is limited to {MAX_EXACT_TAGS} tags "
            f"(2^{MAX_EXACT_TAGS} subsets), got {m}; use method='closed_form' or 'monte_carlo'"
        )
    if method == "monte_carlo" and n_permutations < 2:
        raise ValueError(f"n_permutations must be >= 2, got {n_permutations}")
    if m == 0 or n == 0:
        return np.zeros(m)
    if method == "monte_carlo":
        return _monte_carlo(x, credit, n_permutations, seed)[0]
    if method == "exact" or (method == "auto" and m <= MAX_EXACT_TAGS):
        return _exact(x, credit)
    return _closed_form(x, credit)


def _check_tau(tau: float) -> None:
    if not (tau > 0 and math.isfinite(tau)):
        raise ValueError(f"tau must be a positive finite temperature, got {tau!r}")


def sve_weights(phi: np.ndarray | Sequence[float], tau: float, positive: bool = True) -> np.ndarray:
    """SVE gradient weights of one interaction's user–tag samples.

    Positive: softmax(φ/τ)·m, so the weights average 1 and sum to m (the paper's
    normalisation "around one"); the max is subtracted first for stability. Negative: 1.
    """
    _check_tau(tau)
    phi = np.asarray(phi, dtype=np.float64)
    if phi.ndim != 1:
        raise ValueError(f"phi must be 1-D, got shape {phi.shape}")
    if not positive or len(phi) == 0:
        return np.ones(len(phi))
    z = np.exp((phi - phi.max()) / tau)
    return z / z.sum() * len(phi)


# --------------------------------------------------------------------------------------------
# Dataset-wide batch versions (used by prepare)
# --------------------------------------------------------------------------------------------


def batch_shapley(
    coalitions: Ragged,
    coalition_user: np.ndarray,
    clicked: Ragged,
    clicked_user: np.ndarray,
    credit: Credit = "contains",
) -> np.ndarray:
    """φ for every (coalition, tag), aligned with ``coalitions.values`` (float64).

    Coalition j's clicked sets are the rows of ``clicked`` whose ``clicked_user`` equals
    ``coalition_user[j]``. Uses the closed forms with one global sparse product instead of
    a loop: tags are re-indexed per user ((user, tag) → column), so A = C·Mᵀ only pairs a
    coalition with its own user's clicked sets and A[i, j] = a = |C_i ∩ M_j|. With
    F = f(A) applied to the stored entries (f(0) = 0, so sparsity is kept):

    - contains: φ_jk = (cnt_k/m_j − Σ_i F_ij + (FᵀC)_jk)/n_u, f(a) = a/(m(m−a)) (0 at a = m),
      cnt_k = number of the user's clicked sets holding k;
    - covers:   φ_jk = (FᵀC)_jk / n_u, f(a) = 1/a.

    Users without clicked sets get φ = 0. Duplicate tags inside a clicked set are counted
    once; inside a coalition they are an error.
    """
    _check_credit(credit)
    coalition_user = np.asarray(coalition_user, dtype=np.int64)
    clicked_user = np.asarray(clicked_user, dtype=np.int64)
    if len(coalition_user) != len(coalitions):
        raise ValueError("coalition_user must have one entry per coalition")
    if len(clicked_user) != len(clicked):
        raise ValueError("clicked_user must have one entry per clicked set")
    n_coal, n_click = len(coalitions), len(clicked)
    out = np.zeros(len(coalitions.values))
    if len(out) == 0 or n_click == 0:
        return out

    coal_row = coalitions.row_ids()
    click_row = clicked.row_ids()
    span = int(max(coalitions.values.max(), clicked.values.max(initial=0))) + 1
    coal_key = coalition_user[coal_row] * span + coalitions.values
    click_key = clicked_user[click_row] * span + clicked.values
    keys, inverse = np.unique(np.concatenate([coal_key, click_key]), return_inverse=True)
    coal_col, click_col = inverse[: len(coal_key)], inverse[len(coal_key) :]
    n_keys = len(keys)

    dup_check = np.sort(coal_row * n_keys + coal_col)
    if len(dup_check) > 1 and np.any(dup_check[1:] == dup_check[:-1]):
        raise ValueError("a coalition lists the same tag twice")

    c_mat = sp.csr_matrix(
        (np.ones(len(click_col)), (click_row, click_col)), shape=(n_click, n_keys)
    )
    c_mat.sum_duplicates()
    c_mat.data[:] = 1.0
    m_mat = sp.csr_matrix((np.ones(len(coal_col)), (coal_row, coal_col)), shape=(n_coal, n_keys))

    size = coalitions.lengths().astype(np.float64)  # m_j
    n_user = np.bincount(clicked_user, minlength=int(coalition_user.max(initial=0)) + 1)
    n_of_coal = n_user[coalition_user].astype(np.float64) if n_coal else np.zeros(0)

    overlap = (c_mat @ m_mat.T).tocoo()  # [clicked, coalitions], data = a
    a, j = overlap.data, overlap.col
    if credit == "contains":
        m_j = size[j]
        f = np.divide(a, m_j * (m_j - a), out=np.zeros_like(a), where=a < m_j)
    else:
        f = 1.0 / a
    f_mat = sp.csr_matrix((f, (overlap.row, j)), shape=(n_click, n_coal))
    h = (f_mat.T @ c_mat).multiply(m_mat).tocsr()  # (FᵀC)_jk only where k ∈ M_j
    h.sum_duplicates()
    h.sort_indices()
    h_rows = np.repeat(np.arange(n_coal, dtype=np.int64), np.diff(h.indptr))
    h_keys = h_rows * n_keys + h.indices
    query = coal_row * n_keys + coal_col
    pos = np.minimum(np.searchsorted(h_keys, query), max(len(h_keys) - 1, 0))
    h_val = np.zeros(len(query))
    if len(h_keys):
        found = h_keys[pos] == query
        h_val[found] = h.data[pos[found]]

    if credit == "contains":
        cnt = np.asarray(c_mat.sum(axis=0)).ravel()[coal_col]
        g = np.bincount(j, weights=f, minlength=n_coal)
        out = cnt / size[coal_row] - g[coal_row] + h_val
    else:
        out = h_val
    n_per_value = n_of_coal[coal_row]
    return np.divide(out, n_per_value, out=np.zeros_like(out), where=n_per_value > 0)


def batch_sve_weights(
    phi: np.ndarray,
    offsets: np.ndarray,
    tau: float,
    positive: np.ndarray | None = None,
) -> np.ndarray:
    """Segment-wise :func:`sve_weights`: softmax(φ/τ)·length over each ``offsets`` segment.

    ``positive`` (bool per segment, default all True) gives weight 1 to negative segments.
    Empty segments are allowed (they own no values); everything is vectorised.
    """
    _check_tau(tau)
    phi = np.asarray(phi, dtype=np.float64)
    offsets = np.asarray(offsets, dtype=np.int64)
    if offsets.ndim != 1 or len(offsets) == 0 or offsets[0] != 0 or offsets[-1] != len(phi):
        raise ValueError("offsets must start at 0 and end at len(phi)")
    lengths = np.diff(offsets)
    if np.any(lengths < 0):
        raise ValueError("offsets must be non-decreasing")
    if len(phi) == 0:
        return np.ones(0)
    nonempty = lengths > 0
    starts = offsets[:-1][nonempty]  # strictly increasing, so reduceat sees each segment
    seg = np.repeat(np.arange(len(starts)), lengths[nonempty])
    z = np.exp((phi - np.maximum.reduceat(phi, starts)[seg]) / tau)
    weights = z / np.add.reduceat(z, starts)[seg] * lengths[nonempty][seg]
    if positive is not None:
        positive = np.asarray(positive, dtype=bool)
        if positive.shape != lengths.shape:
            raise ValueError("positive must have one entry per segment")
        weights[~positive[nonempty][seg]] = 1.0
    return weights
