"""Training loop and evaluation shared by every model.

All data lives in tensors built once (user feature bags, item privileged bags, sample
rows); an epoch is a shuffled index, so there is no per-sample Python in the inner loop.
Model selection (early stopping) uses the validation slice of the train users, never the
test users. Training is deterministic on CPU for a given seed.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from training import sve
from training.augment import augment_train_users
from training.data.processed import ProcessedDataset
from training.features import (
    item_privileged,
    sample_truth,
    tag_popularity,
    user_features,
)
from training.metrics import (
    KS,
    avg_shapley,
    per_user_metrics,
    ranking_metrics,
    tag_privileged_hr,
    top_k,
    user_means,
)
from training.models import LEARNED, USES_SVE, Dims, build_model
from training.models.popularity import MostPop, UserPop
from training.negatives import negative_tag_rate, random_tag_distribution, score_prior

SELECTION_METRIC = "ndcg@10"
EVAL_BATCH = 64


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but torch sees no CUDA device")
    return torch.device(device)


class FeatureStore:
    """Every user's feature tensors on the training device; ``gather`` builds a UserBatch."""

    def __init__(self, data: ProcessedDataset, max_history: int, device: torch.device) -> None:
        features = user_features(data, max_history)
        bags = {"hist_tags": features.tags}
        bags.update({f"hist_{f}": bag for f, bag in features.privileged.items()})
        self.tensors: dict[str, Tensor] = {}
        for name, bag in bags.items():
            self.tensors[name] = torch.as_tensor(bag.ids, device=device)
            self.tensors[f"{name}_w"] = torch.as_tensor(bag.weights, device=device)
        self.tensors["attributes"] = torch.as_tensor(features.attributes, device=device)
        self.attribute_sizes = features.attribute_sizes

    def gather(self, users: Tensor) -> dict[str, Tensor]:
        return {name: tensor[users] for name, tensor in self.tensors.items()}


def dims_of(data: ProcessedDataset, store: FeatureStore) -> Dims:
    sizes = {f: len(names) for f, names in data.privileged_names.items()}
    return Dims(data.n_tags, sizes, store.attribute_sizes)


@dataclass
class TrainingRows:
    """Single-tag training samples as tensors, in interaction order."""

    user: Tensor
    item: Tensor  # -1 for random tag negatives (no item, no X_p)
    tag: Tensor
    label: Tensor
    weight: Tensor
    group: np.ndarray  # interaction id per row (the joint loss sums over a group)


def training_rows(data: ProcessedDataset, name: str, config: dict) -> TrainingRows:
    rows = data.single_tag_samples("train")
    weight = np.ones(len(rows), dtype=np.float32)
    if name in USES_SVE:
        phi = getattr(data, f"phi_{config['credit']}")[rows.position].astype(np.float64)
        starts = np.flatnonzero(np.r_[True, rows.interaction[1:] != rows.interaction[:-1]])
        offsets = np.r_[starts, len(rows)]
        positive = rows.label[starts] == 1
        weight = sve.batch_sve_weights(phi, offsets, config["tau"], positive).astype(np.float32)
    _, group = np.unique(rows.interaction, return_inverse=True)
    return TrainingRows(
        user=torch.as_tensor(rows.user, dtype=torch.int64),
        item=torch.as_tensor(rows.item, dtype=torch.int64),
        tag=torch.as_tensor(rows.tag, dtype=torch.int64),
        label=torch.as_tensor(rows.label, dtype=torch.float32),
        weight=torch.as_tensor(weight),
        group=group.astype(np.int64),
    )


class ItemStore:
    """X_p bags of every item, plus an all-zero row for "no item" (index -1)."""

    def __init__(self, data: ProcessedDataset, device: torch.device) -> None:
        self.fields: dict[str, tuple[Tensor, Tensor]] = {}
        for f, bag in item_privileged(data).items():
            ids = np.vstack([bag.ids, np.zeros((1, bag.width), dtype=np.int64)])
            weights = np.vstack([bag.weights, np.zeros((1, bag.width), dtype=np.float32)])
            self.fields[f] = (
                torch.as_tensor(ids, device=device),
                torch.as_tensor(weights, device=device),
            )

    def gather(self, items: Tensor) -> dict[str, tuple[Tensor, Tensor]]:
        return {f: (ids[items], w[items]) for f, (ids, w) in self.fields.items()}


@dataclass
class TrainResult:
    model: nn.Module
    config: dict
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    train_seconds: float = 0.0


def set_determinism(seed: int) -> np.random.Generator:
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    return np.random.default_rng(seed)


def counting_model(data: ProcessedDataset, name: str) -> nn.Module:
    popularity = torch.as_tensor(tag_popularity(data))
    return MostPop(popularity) if name == "mostpop" else UserPop(popularity)


def train_model(
    data: ProcessedDataset,
    name: str,
    config: dict,
    *,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
) -> tuple[TrainResult, FeatureStore]:
    """Train ``name`` on the train users, selecting the epoch on the validation users."""
    dev = pick_device(device)
    rng = set_determinism(seed)
    if name not in LEARNED:
        store = FeatureStore(data, config["max_history"], dev)
        return TrainResult(counting_model(data, name).to(dev), config), store

    data = augment_train_users(data, config.get("augment_cuts", []))
    store = FeatureStore(data, config["max_history"], dev)
    model = build_model(name, dims_of(data, store), config).to(dev)
    rows = training_rows(data, name, config)
    rate = negative_tag_rate(rows.tag.numpy(), rows.label.numpy(), data.n_tags, config)
    prior = score_prior(rate, config.get("prior_correction", 0.0))
    model.score_prior.copy_(torch.as_tensor(prior, device=dev))
    items = ItemStore(data, dev)
    optimiser = torch.optim.Adam(
        model.parameters(), lr=config["lr"], weight_decay=config["weight_decay"]
    )
    valid_users = data.users_in("valid")
    valid_truth = sample_truth(data, valid_users)
    result = TrainResult(model, config)
    best_score, best_state, stale = -1.0, None, 0
    started = time.perf_counter()
    epochs = tqdm(range(1, config["epochs"] + 1), desc=f"train {name}", disable=not progress)
    for epoch in epochs:
        losses = _train_epoch(model, optimiser, rows, config, data.n_tags, rng, store, items)
        valid = evaluate(model, store, data, valid_users, valid_truth)
        record = {"epoch": epoch, **losses, **{f"valid_{k}": v for k, v in valid.items()}}
        result.history.append(record)
        score = valid[SELECTION_METRIC]
        epochs.set_postfix(loss=f"{record['loss']:.4f}", valid_ndcg10=f"{score:.4f}")
        if score > best_score:
            best_score, best_state, stale = score, copy.deepcopy(model.state_dict()), 0
            result.best_epoch = epoch
        else:
            stale += 1
            if stale >= config["patience"]:
                break
    result.train_seconds = time.perf_counter() - started
    if best_state is not None:
        model.load_state_dict(best_state)
    return result, store


def _train_epoch(
    model: nn.Module,
    optimiser: torch.optim.Optimizer,
    rows: TrainingRows,
    config: dict,
    n_tags: int,
    rng: np.random.Generator,
    store: FeatureStore,
    items: ItemStore,
) -> dict[str, float]:
    """One pass over the shuffled rows; returns the mean loss and its parts."""
    model.train()
    device = next(model.parameters()).device
    epoch_rows, group, batches = _epoch(rows, config, n_tags, rng)
    sums: dict[str, float] = {}
    for batch_index in batches:
        batch = _make_batch(epoch_rows, group, batch_index, store, items, device)
        loss, parts = model.loss(batch)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        for key, value in {"loss": float(loss.detach()), **parts}.items():
            sums[key] = sums.get(key, 0.0) + value
    n = max(len(batches), 1)
    return {(k if k == "loss" else f"loss_{k}"): v / n for k, v in sums.items()}


def _epoch(
    rows: TrainingRows, config: dict, n_tags: int, rng: np.random.Generator
) -> tuple[dict[str, Tensor], np.ndarray, list[np.ndarray]]:
    """One epoch: the observed rows plus fresh random tag negatives, shuffled by group.

    Every positive row brings ``tag_negatives`` uniformly drawn tags (label 0, weight 1, no
    item, each its own group), redrawn every epoch. Groups (interactions) are shuffled and
    never split, and batches are cut at the group boundary nearest each multiple of the
    batch size.
    """
    positive = np.flatnonzero(rows.label.numpy() == 1)
    source = np.repeat(positive, config["tag_negatives"])
    n_neg = len(source)
    share = config.get("negative_popularity", 0.0)
    distribution = random_tag_distribution(rows.tag.numpy()[positive], n_tags, share)
    n_groups = int(rows.group.max(initial=-1)) + 1
    epoch = {
        "user": torch.cat([rows.user, rows.user[source]]),
        "tag": torch.cat([rows.tag, torch.as_tensor(rng.choice(n_tags, n_neg, p=distribution))]),
        "item": torch.cat([rows.item, torch.full((n_neg,), -1, dtype=torch.int64)]),
        "label": torch.cat([rows.label, torch.zeros(n_neg)]),
        "weight": torch.cat([rows.weight, torch.ones(n_neg)]),
    }
    group = np.concatenate([rows.group, n_groups + np.arange(n_neg)])
    rank = np.empty(n_groups + n_neg, dtype=np.int64)
    rank[rng.permutation(n_groups + n_neg)] = np.arange(n_groups + n_neg)
    order = np.argsort(rank[group], kind="stable")
    ordered = group[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    wanted = np.arange(config["batch_size"], len(order), config["batch_size"])
    cuts = np.unique(starts[np.minimum(np.searchsorted(starts, wanted), len(starts) - 1)])
    cuts = cuts[cuts > 0]
    return epoch, group, [b for b in np.split(order, cuts) if len(b)]


def _make_batch(
    epoch: dict[str, Tensor],
    group: np.ndarray,
    index: np.ndarray,
    store: FeatureStore,
    items: ItemStore,
    device: torch.device,
) -> dict:
    index_t = torch.as_tensor(index)
    _, local_group = np.unique(group[index], return_inverse=True)
    return {
        "user": store.gather(epoch["user"][index_t].to(device)),
        "tag": epoch["tag"][index_t].to(device),
        "item_privileged": items.gather(epoch["item"][index_t].to(device)),
        "label": epoch["label"][index_t].to(device),
        "weight": epoch["weight"][index_t].to(device),
        "group": torch.as_tensor(local_group, device=device),
    }


@torch.no_grad()
def score_users(model: nn.Module, store: FeatureStore, users: np.ndarray, k: int) -> np.ndarray:
    """Top-k tag indices of every user (all tags scored from user features alone)."""
    model.eval()
    device = store.tensors["hist_tags"].device
    ranked = []
    for start in range(0, len(users), EVAL_BATCH):
        chunk = torch.as_tensor(users[start : start + EVAL_BATCH], dtype=torch.int64)
        scores = model.score_all(store.gather(chunk.to(device))).float().cpu().numpy()
        ranked.append(top_k(scores, k))
    return np.concatenate(ranked) if ranked else np.zeros((0, k), dtype=np.int64)


def evaluate(
    model: nn.Module,
    store: FeatureStore,
    data: ProcessedDataset,
    users: np.ndarray,
    truth: np.ndarray | None = None,
) -> dict[str, float]:
    truth = sample_truth(data, users) if truth is None else truth
    ranked = score_users(model, store, users, max(KS))
    return ranking_metrics(ranked, truth)


@dataclass
class TestReport:
    """Test-user metrics (``metrics.json``) and the @10 metrics of every test user with a
    non-empty truth, for paired comparisons of models on the same users."""

    metrics: dict[str, Any]
    users: np.ndarray
    per_user: dict[str, np.ndarray]


def test_report(
    model: nn.Module, store: FeatureStore, data: ProcessedDataset, credit: str
) -> TestReport:
    """Test-user metrics plus AvgShapley@K and Tag_Privileged_HR@K (paper appendix A)."""
    users = data.users_in("test")
    truth = sample_truth(data, users)
    with_truth = truth.any(axis=1)
    users, truth = users[with_truth], truth[with_truth]
    ranked = score_users(model, store, users, max(KS))
    per_user = per_user_metrics(ranked, truth)
    report: dict[str, Any] = {**user_means(per_user), "test_users": len(users)}
    report.update(avg_shapley(ranked, _tag_shapley(data, credit)))
    if data.privileged_names:
        # the most specific field: with a handful of values (genres) every tag list
        # reaches one the user clicked and the metric saturates at 1
        field = max(data.privileged_names, key=lambda f: len(data.privileged_names[f]))
        tag_priv, user_priv = _privileged_incidence(data, users, field)
        report.update(tag_privileged_hr(ranked, tag_priv, user_priv))
        report["tag_privileged_field"] = field
    at10 = {key: values for key, values in per_user.items() if key.endswith("@10")}
    return TestReport(report, users, at10)


def _tag_shapley(data: ProcessedDataset, credit: str) -> np.ndarray:
    """Mean Shapley value of each tag over the positive training samples."""
    rows = data.single_tag_samples("train")
    positive = rows.label == 1
    phi = getattr(data, f"phi_{credit}")[rows.position[positive]]
    sums = np.bincount(rows.tag[positive], weights=phi, minlength=data.n_tags)
    counts = np.bincount(rows.tag[positive], minlength=data.n_tags)
    return np.divide(sums, counts, out=np.zeros(data.n_tags), where=counts > 0)


def _privileged_incidence(
    data: ProcessedDataset, users: np.ndarray, field: str
) -> tuple[np.ndarray, np.ndarray]:
    """[T, P] tags x values of ``field`` sharing an item, [users, P] values the users
    clicked in their samples; the ``others`` value (id 0) says nothing and is left out."""
    n_values = len(data.privileged_names[field])
    tag_priv = np.zeros((data.n_tags, n_values), dtype=bool)
    user_priv = np.zeros((len(users), n_values), dtype=bool)
    position = np.full(data.n_users, -1)
    position[users] = np.arange(len(users))
    clicked = np.flatnonzero(
        data.inter_is_sample & (data.inter_label == 1) & ~data.inter_sampled
        & (position[data.inter_user] >= 0)
    )  # fmt: skip
    per_item = data.item_privileged[field]
    values = per_item.values.astype(np.int64)
    tags = data.item_tags.take(per_item.row_ids())
    tag_priv[tags.values, np.repeat(values, tags.lengths())] = True
    chosen = per_item.take(data.inter_item[clicked])
    rows = np.repeat(position[data.inter_user[clicked]], chosen.lengths())
    user_priv[rows, chosen.values.astype(np.int64)] = True
    tag_priv[:, 0] = user_priv[:, 0] = False
    return tag_priv, user_priv
