"""Which credit finds the planted decisive tags: Shapley (SVE) or CAMN's learned router?

On the synthetic world every item has 1–2 *decisive* tags that drive clicks and others that
do not (``training.data.synthetic``). For every held-out click of the train users whose item
has both kinds, a credit that understood the clicks ranks the decisive tags above the others.
Reported per credit: the AUC of decisive vs non-decisive tags within a click (ties count
half; 0.5 = blind), and how often the top-credited tag is decisive (random: the share of
decisive tags). Shapley uses φ with the count credit (the paper's); the router is read from
an ``sve`` model trained with ``credit_method: router`` (its raw scores, before top-q).

    .venv/bin/python benchmarks/bench_credit.py --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np
import torch

from training.config import family_config_path, load_config, resolve
from training.data.processed import ProcessedDataset
from training.data.synthetic import generate_synthetic
from training.protocol import ProtocolConfig, prepare_dataset
from training.samples import clicked_counts
from training.trainer import train_model

WORLD = {"users": 1500, "items": 400, "tags": 80}


def held_out_clicks(data: ProcessedDataset) -> list[tuple[int, np.ndarray, np.ndarray, int]]:
    """(interaction, its tags, is-decisive per tag, user) of the train users' held-out clicks
    whose item has decisive and non-decisive tags."""
    truth, raw_index = data.truth, data.raw_index
    tag_of_raw = np.full(int(raw_index["tag"].max()) + 1, -1)
    tag_of_raw[raw_index["tag"]] = np.arange(data.n_tags)
    offsets, decisive = truth["item_decisive_offsets"], truth["item_decisive_tags"]
    train = data.user_split[data.inter_user] == 0
    chosen = np.flatnonzero(data.inter_is_sample & (data.inter_label == 1) & train)
    clicks = []
    for i in chosen:
        raw_item = raw_index["item"][data.inter_item[i]]
        planted = tag_of_raw[decisive[offsets[raw_item] : offsets[raw_item + 1]]]
        tags = data.inter_tags[i]
        is_decisive = np.isin(tags, planted)
        if is_decisive.any() and not is_decisive.all():
            clicks.append((int(i), tags, is_decisive, int(data.inter_user[i])))
    return clicks


def recovery(credits: list[np.ndarray], clicks: list) -> dict[str, float]:
    aucs, top = [], []
    for credit, (_, _, is_decisive, _) in zip(credits, clicks, strict=True):
        diff = credit[is_decisive][:, None] - credit[~is_decisive][None, :]
        aucs.append(float(((diff > 0) + 0.5 * (diff == 0)).mean()))
        top.append(bool(is_decisive[np.argmax(credit)]))
    return {"auc": statistics.fmean(aucs), "top_decisive": statistics.fmean(top)}


def shapley_credits(data: ProcessedDataset, clicks: list) -> list[np.ndarray]:
    counts = clicked_counts(data)
    return [
        data.phi_contains[data.inter_tags.offsets[i] : data.inter_tags.offsets[i + 1]] * counts[u]
        for i, _, _, u in clicks
    ]


def router_credits(data: ProcessedDataset, clicks: list, seed: int) -> list[np.ndarray]:
    config = {**resolve(load_config(family_config_path("synthetic")), "sve"),
              "credit_method": "router"}  # fmt: skip
    result, store = train_model(data, "sve", config, seed=seed, progress=False)
    model = result.model.eval()
    router = model.router
    credits = []
    with torch.no_grad():  # scoring only: the training above needs gradients
        for _, tags, _, u in clicks:
            x_user = model.encoder(store.gather(torch.as_tensor([u])))
            hidden = torch.tanh(
                router.user(x_user) + router.tag(model.encoder.tag(torch.as_tensor(tags)))
            )
            credits.append(router.out(hidden).squeeze(-1).numpy())
    return credits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2", help="world (and training) seeds")
    args = parser.parse_args()
    rows = {"shapley (count credit)": [], "CAMN router": [], "random": []}
    for seed in (int(s) for s in args.seeds.split(",")):
        raw = generate_synthetic(**WORLD, seed=seed)
        data, _ = prepare_dataset(raw, ProtocolConfig(min_tag_count=1, seed=seed),
                                  family="synthetic")  # fmt: skip
        clicks = held_out_clicks(data)
        rng = np.random.default_rng(seed)
        rows["shapley (count credit)"].append(recovery(shapley_credits(data, clicks), clicks))
        rows["CAMN router"].append(recovery(router_credits(data, clicks, seed), clicks))
        rows["random"].append(recovery([rng.random(len(c[1])) for c in clicks], clicks))
        print(f"seed {seed}: {len(clicks)} held-out clicks with decisive and other tags")
    print("| credit | decisive-vs-other AUC | top tag decisive | per seed (AUC) |")
    print("|---|---:|---:|---|")
    for name, runs in rows.items():
        auc = statistics.fmean(r["auc"] for r in runs)
        top = statistics.fmean(r["top_decisive"] for r in runs)
        per_seed = ", ".join(f"{r['auc']:.3f}" for r in runs)
        print(f"| {name} | {auc:.3f} | {top:.3f} | {per_seed} |")


if __name__ == "__main__":
    main()
