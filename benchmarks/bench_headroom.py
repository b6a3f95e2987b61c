"""How much room is there above counting? Simple blends scored like the models.

For the validation and test users of a prepared data set, ranks all tags by hand-made
scores and reports NDCG@10 and P@10:

- ``mostpop`` and ``userpop`` exactly as the baselines;
- ``freq + a*pop``: the user's history frequency blended with global popularity;
- ``freq + b*cooc``: plus Σ_h w_h P(t | h), the co-occurrence of each tag with the user's
  history tags among the train users' interactions (P has no diagonal).

The best blend on *validation* users is an upper-end estimate of what a learned model can
add to counting on that data set without new information; a model far above it would be
suspicious, one far below it under-fits.

    .venv/bin/python benchmarks/bench_headroom.py --data artifacts/data/hetrec-movielens-2k
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from training.data.processed import TRAIN, ProcessedDataset
from training.features import sample_truth, tag_popularity, user_features
from training.metrics import ranking_metrics, top_k


def cooccurrence(data: ProcessedDataset) -> np.ndarray:
    train = data.user_split[data.inter_user] == TRAIN
    chosen = np.flatnonzero(train & (data.inter_label == 1) & ~data.inter_sampled)
    coalitions = data.inter_tags.take(chosen)
    incidence = sp.csr_matrix(
        (np.ones(len(coalitions.values)), (coalitions.row_ids(), coalitions.values)),
        shape=(len(coalitions), data.n_tags),
    )
    counts = (incidence.T @ incidence).toarray()
    np.fill_diagonal(counts, 0.0)
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="a prepared data set")
    args = parser.parse_args()
    data = ProcessedDataset.load(args.data)
    bags = user_features(data, max_history=100).tags
    pop = tag_popularity(data)
    pop = pop / pop.max()
    cooc = cooccurrence(data)
    rows = []
    for split in ("valid", "test"):
        users = data.users_in(split)
        truth = sample_truth(data, users)
        keep = truth.any(axis=1)
        users, truth = users[keep], truth[keep]
        freq = np.zeros((len(users), data.n_tags))
        user_rows = np.repeat(np.arange(len(users)), bags.width)
        np.add.at(freq, (user_rows, bags.ids[users].ravel()), bags.weights[users].ravel())
        blends = {
            "mostpop": np.tile(pop, (len(users), 1)),
            "userpop": freq + 1e-3 * pop,
            **{f"freq + {a}*pop": freq + a * pop for a in (0.01, 0.05, 0.2)},
            **{f"freq + {b}*cooc + 1e-3*pop": freq + b * (freq @ cooc) + 1e-3 * pop
               for b in (0.1, 0.3, 1.0)},
        }  # fmt: skip
        for name, scores in blends.items():
            m = ranking_metrics(top_k(scores, 20), truth)
            rows.append((split, len(users), name, m["ndcg@10"], m["precision@10"]))
    train = data.single_tag_samples("train")
    positive = train.label == 1
    in_history = bags.ids[train.user[positive]] == train.tag[positive, None]
    repeat = float((in_history & (bags.weights[train.user[positive]] > 0)).any(axis=1).mean())
    print(f"data: {args.data} ({data.meta['dataset']}); machine: {platform.platform()}")
    print(f"positive train samples whose tag is in the user's history: {repeat:.0%}\n")
    print("| users | n | score | NDCG@10 | P@10 |")
    print("|---|---:|---|---:|---:|")
    for split, n, name, ndcg, precision in rows:
        print(f"| {split} | {n} | {name} | {ndcg:.4f} | {precision:.4f} |")


if __name__ == "__main__":
    main()
