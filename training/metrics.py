"""Top-K ranking metrics over the whole tag vocabulary (DESIGN §2), pure numpy.

Binary relevance: a recommended tag is a hit when it is in the user's truth set (the tags
of the user's positive sample interactions). Per user, with hits h_1..h_K of the top K:

- Precision@K = Σh / K;  Recall@K = Σh / |truth|;  HR@K = 1 if Σh > 0;
- NDCG@K = DCG / IDCG with DCG = Σ_j h_j / log2(j + 1) and IDCG the DCG of min(K, |truth|)
  hits in front.

Reported values are means over users with a non-empty truth set.

A profile is judged on two questions, so every metric comes in three views:

- ``<metric>@K``: the whole ranking against all held-out tags (what the paper reports; a
  large part of it rewards repeating the user's history, where counting is optimal);
- ``novel_<metric>@K``: the user's history tags removed from the ranking *and* from the
  truth, users without a novel held-out tag skipped: does the profile find tags the user
  has never used (what counting cannot do)?
- ``repeat_<metric>@K``: the whole ranking against the held-out tags the user had already
  used, users without one skipped: does the profile keep the tags the user comes back to?
"""

from __future__ import annotations

import numpy as np

KS = (5, 10, 20)
METRICS = ("precision", "recall", "hr", "ndcg")
VIEWS = ("", "novel_", "repeat_")
"""Prefixes of the three views of every metric (module docstring)."""


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k best scores per row, best first; ties broken by the lower index."""
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def hit_matrix(ranked: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """[users, K] bool: is the j-th recommended tag in the truth (``truth`` is [users, T] bool)."""
    return np.take_along_axis(truth, ranked, axis=1)


def per_user_metrics(
    ranked: np.ndarray, truth: np.ndarray, ks: tuple[int, ...] = KS
) -> dict[str, np.ndarray]:
    """Precision/Recall/HR/NDCG@K of every user (keys like ``ndcg@10``, values [users],
    NaN for a user whose truth is empty): what paired comparisons between models need.

    ``ranked`` holds at least max(ks) tag indices per user, best first.
    """
    n_truth = truth.sum(axis=1).astype(np.float64)
    hits = hit_matrix(ranked, truth).astype(np.float64)
    empty = n_truth == 0
    out: dict[str, np.ndarray] = {}
    discounts = 1.0 / np.log2(np.arange(2, hits.shape[1] + 2))
    for k in ks:
        h = hits[:, :k]
        n_hits = h.sum(axis=1)
        dcg = (h * discounts[:k]).sum(axis=1)
        ideal = np.cumsum(discounts[:k])[np.clip(n_truth, 1, k).astype(int) - 1]
        values = {
            "precision": n_hits / k,
            "recall": n_hits / np.maximum(n_truth, 1),
            "hr": (n_hits > 0).astype(np.float64),
            "ndcg": dcg / ideal,
        }
        for name, value in values.items():
            out[f"{name}@{k}"] = np.where(empty, np.nan, value)
    return out


def discovery_metrics(
    ranked: np.ndarray,
    ranked_novel: np.ndarray,
    truth: np.ndarray,
    history: np.ndarray,
    ks: tuple[int, ...] = KS,
) -> dict[str, np.ndarray]:
    """The three views of every metric per user (module docstring). ``ranked_novel`` is the
    ranking with the user's ``history`` tags ([users, T] bool) removed."""
    out = per_user_metrics(ranked, truth, ks)
    novel = per_user_metrics(ranked_novel, truth & ~history, ks)
    repeat = per_user_metrics(ranked, truth & history, ks)
    out.update({f"novel_{k}": v for k, v in novel.items()})
    out.update({f"repeat_{k}": v for k, v in repeat.items()})
    return out


def user_means(per_user: dict[str, np.ndarray]) -> dict[str, float]:
    """The reported value of each metric: its mean over the users it is defined for
    (NaN entries left out; 0 without any)."""
    means = {}
    for key, values in per_user.items():
        defined = values[np.isfinite(values)]
        means[key] = float(defined.mean()) if len(defined) else 0.0
    return means


def ranking_metrics(
    ranked: np.ndarray, truth: np.ndarray, ks: tuple[int, ...] = KS
) -> dict[str, float]:
    """Means over users of ``per_user_metrics`` (users whose truth is empty left out)."""
    return user_means(per_user_metrics(ranked, truth, ks))


def avg_shapley(ranked: np.ndarray, tag_shapley: np.ndarray, ks: tuple[int, ...] = KS):
    """AvgShapley@K (CTMVM appendix A.1): mean over users of the mean Shap(tag) of their top K.

    ``tag_shapley[t]`` is the average Shapley value of tag t over the training samples.
    """
    return {f"avg_shapley@{k}": float(tag_shapley[ranked[:, :k]].mean()) for k in ks}


def tag_privileged_hr(
    ranked: np.ndarray,
    tag_privileged: np.ndarray,
    user_privileged: np.ndarray,
    ks: tuple[int, ...] = KS,
) -> dict[str, float]:
    """Tag_Privileged_HR@K (CTMVM appendix A.2).

    A user scores 1 when the privileged values co-occurring (in one item) with any of the
    top-K tags meet the privileged values the user clicked. ``tag_privileged`` is [T, P]
    bool, ``user_privileged`` [users, P] bool; users with no clicked value are left out.
    """
    keep = user_privileged.any(axis=1)
    ranked, user_privileged = ranked[keep], user_privileged[keep]
    out = {}
    for k in ks:
        reached = np.zeros_like(user_privileged)
        for j in range(k):
            reached |= tag_privileged[ranked[:, j]]
        hit = (reached & user_privileged).any(axis=1)
        out[f"tag_privileged_hr@{k}"] = float(hit.mean()) if len(hit) else 0.0
    return out
