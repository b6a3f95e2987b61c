"""Top-K ranking metrics over the whole tag vocabulary (DESIGN §2), pure numpy.

Binary relevance: a recommended tag is a hit when it is in the user's truth set (the tags
of the user's positive sample interactions). Per user, with hits h_1..h_K of the top K:

- Precision@K = Σh / K;  Recall@K = Σh / |truth|;  HR@K = 1 if Σh > 0;
- NDCG@K = DCG / IDCG with DCG = Σ_j h_j / log2(j + 1) and IDCG the DCG of min(K, |truth|)
  hits in front.

Reported values are means over users with a non-empty truth set.
"""

from __future__ import annotations

import numpy as np

KS = (5, 10, 20)
METRICS = ("precision", "recall", "hr", "ndcg")


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k best scores per row, best first; ties broken by the lower index."""
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def hit_matrix(ranked: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """[users, K] bool: is the j-th recommended tag in the truth (``truth`` is [users, T] bool)."""
    return np.take_along_axis(truth, ranked, axis=1)


def per_user_metrics(
    ranked: np.ndarray, truth: np.ndarray, ks: tuple[int, ...] = KS
) -> dict[str, np.ndarray]:
    """Precision/Recall/HR/NDCG@K of every user with a non-empty truth (keys like
    ``ndcg@10``, values [users]): what paired comparisons between models need.

    ``ranked`` holds at least max(ks) tag indices per user, best first.
    """
    n_truth = truth.sum(axis=1)
    keep = n_truth > 0
    hits = hit_matrix(ranked[keep], truth[keep]).astype(np.float64)
    n_truth = n_truth[keep].astype(np.float64)
    out: dict[str, np.ndarray] = {}
    discounts = 1.0 / np.log2(np.arange(2, hits.shape[1] + 2))
    for k in ks:
        h = hits[:, :k]
        n_hits = h.sum(axis=1)
        dcg = (h * discounts[:k]).sum(axis=1)
        ideal = np.cumsum(discounts[:k])[np.minimum(n_truth, k).astype(int) - 1]
        out[f"precision@{k}"] = n_hits / k
        out[f"recall@{k}"] = n_hits / n_truth
        out[f"hr@{k}"] = (n_hits > 0).astype(np.float64)
        out[f"ndcg@{k}"] = dcg / ideal
    return out


def user_means(per_user: dict[str, np.ndarray]) -> dict[str, float]:
    """The reported value of each metric: its mean over users (0 without users)."""
    return {key: float(values.mean()) if len(values) else 0.0 for key, values in per_user.items()}


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
