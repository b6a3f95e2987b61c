"""Training loop and evaluation shared by every model.

All data lives in arrays built once (user feature bags, item privileged bags, the users'
targets, ``training.samples``); an epoch is a shuffled order of train users, so there is no
per-sample Python in the inner loop.
Model selection (early stopping) uses the validation slice of the train users, never the
test users. Training is deterministic on CPU for a given seed (and number of processes).
Under torchrun (``training.distributed``) each rank takes its share of every batch and
DistributedDataParallel averages the gradients, so the ranks together take the steps one
process would; validation is scored in shares and gathered, so every rank makes the same
selection and early-stopping decision.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from training.augment import augment_train_users
from training.data.processed import ProcessedDataset
from training.distributed import World, epoch_order, gather
from training.features import (
    history_tags,
    item_privileged,
    sample_truth,
    tag_cooccurrence_counts,
    tag_popularity,
    tags_used,
    user_features,
)
from training.metrics import (
    KS,
    avg_shapley,
    discovery_metrics,
    tag_privileged_hr,
    top_k,
    user_means,
)
from training.models import LEARNED, Dims, build_model
from training.models.ctmvm import CTMVM
from training.models.layers import CoOccurrence
from training.models.popularity import CoOccur, CountingOffset, MostPop, UserPop
from training.samples import (
    TrainingSamples,
    coalitions,
    item_tag_rows,
    privileged_rows,
    to_tensors,
    training_samples,
)

SELECTION_METRIC = "ndcg@10"
ROW_KEYS = ("tags", "log_q", "weights", "negative_mask")
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
        self.n_tags = data.n_tags
        self.counted: sp.csr_matrix | None = None

    def add_counted_tags(self, used: sp.csr_matrix) -> None:
        """Training only: each user's own tags in the co-occurrence counts, gathered as
        ``counted_tags`` so ``CoOccurrence`` can leave the user out (never at inference)."""
        self.counted = used

    def gather(self, users: Tensor) -> dict[str, Tensor]:
        return {name: tensor[users] for name, tensor in self.tensors.items()}

    def gather_counted(self, users: Tensor) -> dict[str, Tensor]:
        """``gather`` plus ``counted_tags`` (the training batches)."""
        batch = self.gather(users)
        if self.counted is not None:
            rows = self.counted[users.cpu().numpy()].toarray()
            batch["counted_tags"] = torch.as_tensor(rows, device=users.device)
        return batch


def dims_of(data: ProcessedDataset, store: FeatureStore) -> Dims:
    sizes = {f: len(names) for f, names in data.privileged_names.items()}
    return Dims(data.n_tags, sizes, store.attribute_sizes)


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

    @property
    def device(self) -> torch.device:
        return next(iter(self.fields.values()))[0].device if self.fields else torch.device("cpu")

    def gather(self, items: Tensor) -> dict[str, tuple[Tensor, Tensor]]:
        return {f: (ids[items], w[items]) for f, (ids, w) in self.fields.items()}


@dataclass
class TrainResult:
    model: nn.Module
    config: dict
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    train_seconds: float = 0.0


def set_determinism(seed: int, world: World | None = None) -> np.random.Generator:
    """Seed torch alike on every rank (the same initial model) and numpy per rank (each
    rank draws its own negatives and rows); one process keeps the plain seed."""
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    if world is None or not world.distributed:
        return np.random.default_rng(seed)
    return np.random.default_rng([seed, world.rank])


class Objective(nn.Module):
    """The model's losses as a ``forward``: DistributedDataParallel synchronises the
    gradients of what runs through its wrapped module's forward, and the models expose
    ``loss`` and ``item_tag_loss`` instead."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict, item_tags: bool = False) -> tuple[Tensor, dict[str, float]]:
        if item_tags:
            return self.model.item_tag_loss(batch), {}
        return self.model.loss(batch)


def objective_of(model: nn.Module, world: World, device: torch.device) -> nn.Module:
    """``Objective(model)``, wrapped in DDP when there are several ranks. A step may leave
    parameters without a gradient (a batch share with no privileged rows; the pre-training
    touches the item-tag parameters only), hence ``find_unused_parameters``; the buffers
    are train counts, equal on every rank, so they are not broadcast again at every step."""
    objective = Objective(model)
    if not world.distributed:
        return objective
    return DistributedDataParallel(
        objective,
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=True,
        forward_sync_buffers=False,
    )


def counting_model(data: ProcessedDataset, name: str) -> nn.Module:
    popularity = torch.as_tensor(tag_popularity(data))
    if name == "cooccur":
        return CoOccur(popularity, torch.as_tensor(tag_cooccurrence_counts(data)))
    return MostPop(popularity) if name == "mostpop" else UserPop(popularity)


def selection_score(metric: str) -> Callable[[dict[str, float]], float]:
    """The validation score epochs are selected on: one metric, or a sum such as
    ``ndcg@10+novel_ndcg@10`` (a profile has to keep the user's tags *and* find new ones)."""
    keys = [k.strip() for k in metric.split("+")]
    return lambda scores: sum(scores[k] for k in keys)


def fill_counts(model: nn.Module, popularity: np.ndarray, cooccurrence: np.ndarray) -> None:
    """Give a learned model the counts its counting parts read (train data only)."""
    for module in model.modules():
        if isinstance(module, CountingOffset):
            module.popularity.copy_(torch.as_tensor(popularity))
        elif isinstance(module, CoOccurrence):
            module.counts.copy_(torch.as_tensor(cooccurrence))


def train_model(
    data: ProcessedDataset,
    name: str,
    config: dict,
    *,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
    world: World | None = None,
) -> tuple[TrainResult, FeatureStore]:
    """Train ``name`` on the train users, selecting the epoch on the validation users.

    Epoch 0 (the untrained model, which ranks like ``userpop`` for every model with the
    counting offset) is a candidate of the selection, so the returned model is never worse
    than counting on validation. Early stopping waits ``min_epochs`` before it counts
    ``patience`` epochs without improvement: the privileged views need a few epochs to
    separate before they can help. ``world`` (torchrun's ranks, inside a process group)
    shares the batches out; every rank returns the same selected model.
    """
    world = world or World()
    dev = pick_device(device)
    if world.distributed and dev.type == "cuda":
        dev = torch.device("cuda", torch.cuda.current_device())
    rng = set_determinism(seed, world)
    if name not in LEARNED:
        store = FeatureStore(data, config["max_history"], dev)
        return TrainResult(counting_model(data, name).to(dev), config), store

    popularity = tag_popularity(data)
    data = augment_train_users(data, config.get("augment_cuts", []))
    store = FeatureStore(data, config["max_history"], dev)
    model = build_model(name, dims_of(data, store), config).to(dev)
    fill_counts(model, popularity, tag_cooccurrence_counts(data))
    objective = objective_of(model, world, dev)  # DDP copies rank 0's weights to every rank
    store.add_counted_tags(tags_used(data))
    samples = training_samples(data, name, config)
    items = ItemStore(data, dev)
    optimiser = torch.optim.Adam(
        model.parameters(), lr=config["lr"], weight_decay=config["weight_decay"]
    )
    started = time.perf_counter()  # train_seconds include the pre-training
    if isinstance(model, CTMVM):
        pretrain_item_tags(objective, samples, items, config, rng, progress, world)
    valid = Evaluation(data, data.users_in("valid")[world.rank :: world.size])
    select = selection_score(config.get("selection_metric", SELECTION_METRIC))
    result = TrainResult(model, config)
    first = valid.metrics(model, store, world)
    result.history.append({"epoch": 0, **{f"valid_{k}": v for k, v in first.items()}})
    best_score, best_state, stale = select(first), copy.deepcopy(model.state_dict()), 0
    min_epochs = int(config.get("min_epochs", 0))
    per_epoch = -(-world.share(len(samples)) // world.share(config["batch_size"]))
    if config.get("max_batches"):  # a bounded epoch: throughput probes at scale
        per_epoch = min(per_epoch, int(config["max_batches"]))
    bar = tqdm(total=config["epochs"] * per_epoch, desc=f"train {name}", unit="batch",
               disable=not progress or None, dynamic_ncols=True)  # fmt: skip
    for epoch in range(1, config["epochs"] + 1):
        bar.set_description(f"train {name} epoch {epoch}/{config['epochs']}")
        epoch_started = time.perf_counter()
        order = epoch_share(len(samples), epoch, seed, rng, world)
        losses = _train_epoch(objective, optimiser, order, samples, store, items, config, rng,
                              bar, world)  # fmt: skip
        timing = {"epoch_seconds": round(time.perf_counter() - epoch_started, 3),
                  "epoch_samples": min(len(samples), per_epoch * config["batch_size"])}  # fmt: skip
        scores = valid.metrics(model, store, world)
        record = {"epoch": epoch, **losses, **timing,
                  **{f"valid_{k}": v for k, v in scores.items()}}  # fmt: skip
        result.history.append(record)
        bar.set_postfix(loss=f"{record['loss']:.3f}", valid=f"{select(scores):.4f}",
                        best_epoch=result.best_epoch)  # fmt: skip
        if select(scores) > best_score:
            best_score, best_state, stale = select(scores), copy.deepcopy(model.state_dict()), 0
            result.best_epoch = epoch
        elif epoch >= min_epochs:
            stale += 1
            if stale >= config["patience"]:
                break
    bar.total = bar.n  # early stopping: the bar ends where training did
    bar.close()
    result.train_seconds = time.perf_counter() - started
    model.load_state_dict(best_state)
    return result, store


def epoch_share(
    n: int, epoch: int, seed: int, rng: np.random.Generator, world: World
) -> np.ndarray:
    """The positions of ``samples`` this process trains on in ``epoch``, in order: a
    permutation of all of them for one process, the rank's ``DistributedSampler`` share
    under torchrun."""
    if not world.distributed:
        return rng.permutation(n)
    return epoch_order(n, epoch, seed, world)


def pretrain_item_tags(
    objective: nn.Module,
    samples: TrainingSamples,
    items: ItemStore,
    config: dict,
    rng: np.random.Generator,
    progress: bool = False,
    world: World | None = None,
) -> None:
    """Learn P(tag | X_p) alone first (``CTMVM.item_tag_loss``): it is cheap (no user
    features) and needs far more steps than the main network can take before it overfits
    the few train users, so the privileged embeddings start the joint training aligned
    with the tags instead of random. ``objective`` is ``objective_of(model, ...)``; each
    rank draws its share of the rows of a step."""
    steps = int(config.get("item_tag_pretrain_steps", 0))
    if steps <= 0:
        return
    world = world or World()
    model = _inner(objective)
    device = items.device
    parameters = [
        *model.encoder.tag.parameters(), *model.encoder.privileged.parameters(),
        *model.supplementary_match.parameters(), model.item_tag_bias,
    ]  # fmt: skip
    optimiser = torch.optim.Adam(parameters, lr=float(config.get("item_tag_lr", 0.01)))
    n_rows = world.share(int(config.get("item_tag_pretrain_rows", 1024)))
    model.train()
    for _ in tqdm(range(steps), desc="P(tag | X_p) pre-training", unit="step",
                  disable=not progress or None, dynamic_ncols=True, leave=False):  # fmt: skip
        pairs = item_tag_rows(samples, n_rows, samples.proposal.shape[0], config, rng)
        batch = {
            "item_privileged": items.gather(torch.as_tensor(pairs["item"], device=device)),
            **to_tensors({k: pairs[k] for k in ROW_KEYS}, device),
        }
        loss, _ = objective(batch, item_tags=True)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()


def _inner(objective: nn.Module) -> nn.Module:
    """The model inside ``objective_of``'s wrapper(s)."""
    if isinstance(objective, DistributedDataParallel):
        objective = objective.module
    return objective.model


def _train_epoch(
    objective: nn.Module,
    optimiser: torch.optim.Optimizer,
    order: np.ndarray,
    samples: TrainingSamples,
    store: FeatureStore,
    items: ItemStore,
    config: dict,
    rng: np.random.Generator,
    bar: tqdm,
    world: World,
) -> dict[str, float]:
    """One pass over the train users at positions ``order``, in batches (each rank takes its
    share of ``batch_size``; only the first ``max_batches`` where the config sets it); the
    mean loss and its parts (averaged over the ranks)."""
    model = _inner(objective)
    model.train()
    size = world.share(config["batch_size"])
    if config.get("max_batches"):
        order = order[: int(config["max_batches"]) * size]
    if world.distributed:  # the item-tag rows of a step are shared out like its users
        config = {**config, "item_tag_rows": world.share(int(config.get("item_tag_rows", 256)))}
    sums: dict[str, float] = {}
    n = 0
    for start in range(0, len(order), size):
        index = order[start : start + size]
        batch = make_batch(samples, index, store, items, config, rng, isinstance(model, CTMVM))
        loss, parts = objective(batch)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        for key, value in {"loss": float(loss.detach()), **parts}.items():
            sums[key] = sums.get(key, 0.0) + value
        n += 1
        bar.update(1)
    means = {(k if k == "loss" else f"loss_{k}"): v / max(n, 1) for k, v in sums.items()}
    if not world.distributed:
        return means
    shares = gather(means, world)
    keys = dict.fromkeys(k for share in shares for k in share)
    return {k: float(np.mean([share[k] for share in shares if k in share])) for k in keys}


def make_batch(
    samples: TrainingSamples,
    index: np.ndarray,
    store: FeatureStore,
    items: ItemStore,
    config: dict,
    rng: np.random.Generator,
    with_rows: bool,
) -> dict[str, Any]:
    """What ``model.loss`` reads for the users at positions ``index`` of ``samples``; the
    privileged rows only ``with_rows`` (CTMVM and PKM)."""
    device = store.tensors["hist_tags"].device
    n_tags = store.n_tags
    users = torch.as_tensor(samples.users[index], device=device)
    batch: dict[str, Any] = {
        "user": store.gather_counted(users),
        "targets": torch.as_tensor(samples.targets.dense(index, n_tags), device=device),
    }
    if config.get("negative_weight", 0.0) > 0:
        negatives = samples.negatives.dense(index, n_tags) > 0
        batch["negatives"] = torch.as_tensor(negatives, device=device)
    if config.get("credit_method", "shapley") == "router":
        batch["coalitions"] = to_tensors(coalitions(samples, index), device)
    if with_rows:
        rows = privileged_rows(samples, index, n_tags, config, rng)
        owner = torch.as_tensor(rows["owner"], device=device)
        batch["rows"] = {
            "user": {k: v[owner] for k, v in batch["user"].items()},
            "item_privileged": items.gather(torch.as_tensor(rows["item"], device=device)),
            **to_tensors({k: rows[k] for k in ROW_KEYS}, device),
        }
        pairs = item_tag_rows(samples, int(config.get("item_tag_rows", 256)), n_tags, config, rng)
        batch["item_tags"] = {
            "item_privileged": items.gather(torch.as_tensor(pairs["item"], device=device)),
            **to_tensors({k: pairs[k] for k in ROW_KEYS}, device),
        }
    return batch


@torch.no_grad()
def rank_users(
    model: nn.Module,
    store: FeatureStore,
    users: np.ndarray,
    k: int,
    history: np.ndarray,
    truth: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-k tag indices of every user (all tags scored from user features alone), the
    top k among the tags outside the user's ``history`` ([users, T] bool), and the mean
    negative log-likelihood of the user's ``truth`` tags under the normalised scores (NaN
    without truth): the held-out loss, to tell overfitting from a ranking change."""
    model.eval()
    device = store.tensors["hist_tags"].device
    ranked, novel, nll = [], [], []
    for start in range(0, len(users), EVAL_BATCH):
        chunk = torch.as_tensor(users[start : start + EVAL_BATCH], dtype=torch.int64)
        scores = model.score_all(store.gather(chunk.to(device))).double().cpu().numpy().copy()
        ranked.append(top_k(scores, k))
        if truth is not None:
            share = scores / np.maximum(scores.sum(axis=1, keepdims=True), 1e-300)
            held = truth[start : start + EVAL_BATCH]
            log_p = np.log(np.maximum(share, 1e-12)) * held
            nll.append(-log_p.sum(axis=1) / np.where(held.any(axis=1), held.sum(axis=1), np.nan))
        scores[history[start : start + EVAL_BATCH]] = -np.inf
        novel.append(top_k(scores, k))
    empty = np.zeros((0, k), dtype=np.int64)
    return (
        np.concatenate(ranked) if ranked else empty,
        np.concatenate(novel) if novel else empty,
        np.concatenate(nll) if nll else np.full(len(users), np.nan),
    )


class Evaluation:
    """A fixed set of users with their truth and history tags, scored again each epoch."""

    def __init__(self, data: ProcessedDataset, users: np.ndarray) -> None:
        self.users = users
        self.truth = sample_truth(data, users)
        self.history = history_tags(data, users)

    def per_user(self, model: nn.Module, store: FeatureStore) -> dict[str, np.ndarray]:
        ranked, novel, nll = rank_users(model, store, self.users, max(KS), self.history, self.truth)
        return {**discovery_metrics(ranked, novel, self.truth, self.history), "nll": nll}

    def metrics(
        self, model: nn.Module, store: FeatureStore, world: World | None = None
    ) -> dict[str, float]:
        """Means over the users; under torchrun each rank scores its share of them and the
        per-user values of every rank are gathered first, so all ranks agree."""
        per_user = self.per_user(model, store)
        if world is not None and world.distributed:
            shares = gather(per_user, world)
            per_user = {k: np.concatenate([share[k] for share in shares]) for k in per_user}
        return user_means(per_user)


def evaluate(
    model: nn.Module, store: FeatureStore, data: ProcessedDataset, users: np.ndarray
) -> dict[str, float]:
    """Means over ``users`` of every metric (standard, novel and repeat)."""
    return Evaluation(data, users).metrics(model, store)


@dataclass
class TestReport:
    """Test-user metrics (``metrics.json``) and the @10 metrics of every test user with a
    non-empty truth, for paired comparisons of models on the same users (NaN where a user
    has no novel or no repeat truth)."""

    metrics: dict[str, Any]
    users: np.ndarray
    per_user: dict[str, np.ndarray]


def test_report(
    model: nn.Module, store: FeatureStore, data: ProcessedDataset, credit: str
) -> TestReport:
    """Test-user metrics plus AvgShapley@K and Tag_Privileged_HR@K (paper appendix A)."""
    users = data.users_in("test")
    with_truth = sample_truth(data, users).any(axis=1)
    evaluation = Evaluation(data, users[with_truth])
    users = evaluation.users
    ranked, novel, _ = rank_users(model, store, users, max(KS), evaluation.history)
    per_user = discovery_metrics(ranked, novel, evaluation.truth, evaluation.history)
    report: dict[str, Any] = {**user_means(per_user), "test_users": len(users)}
    for view in ("novel", "repeat"):
        report[f"{view}_test_users"] = int(np.isfinite(per_user[f"{view}_ndcg@10"]).sum())
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
