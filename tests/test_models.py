"""The models of DESIGN §2 on a tiny prepared synthetic world: shapes, gradient flow,
the stop-gradient of the mapping loss, SVE weighting, views, the inference path and the
counting baselines."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from training.export.folded import FoldedScorer
from training.features import tag_popularity
from training.models import LEARNED, MODELS, USES_SVE, build_model
from training.models.ctmvm import CTMVM
from training.models.mlp import MainNetwork, weighted_bce
from training.models.popularity import MostPop, UserPop
from training.models.utpm import UTPM
from training.negatives import negative_tag_rate, random_tag_distribution, score_prior
from training.trainer import FeatureStore, counting_model, training_rows

from .model_fixtures import (
    CPU,
    dims,
    model_config,
    single_thread,
    training_batch,
    user_batch,
    world,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


def fresh(name: str, seed: int = 0, **overrides: Any) -> tuple[nn.Module, dict[str, Any]]:
    data = world()
    config = model_config(name, **overrides)
    torch.manual_seed(seed)
    return build_model(name, dims(data, config), config), config


def grads(model: nn.Module) -> dict[str, Tensor]:
    """Parameter name -> gradient (zeros where backward did not reach the parameter)."""
    return {
        n: torch.zeros_like(p) if p.grad is None else p.grad.clone()
        for n, p in model.named_parameters()
    }


def reached(gradients: dict[str, Tensor], prefix: str) -> bool:
    """Whether every parameter under ``prefix`` got a non-zero gradient."""
    chosen = [g for n, g in gradients.items() if n == prefix or n.startswith(prefix + ".")]
    assert chosen, f"no parameter named {prefix}"
    return all(bool(g.abs().sum() > 0) for g in chosen)


# Parameters that the loss of each model must reach (by name prefix).
EXPECTED_GRADIENTS = {
    "youtube": ["encoder.tag", "encoder.privileged", "encoder.attributes", "target", "main",
                "wide", "tag_bias"],
    "sve": ["encoder.tag", "encoder.privileged", "target", "main", "wide", "tag_bias"],
    "utpm": ["encoder.tag", "encoder.privileged", "queries", "within", "across", "latent",
             "dense", "target_out", "tag_bias"],
    "sve_pkm": ["encoder.tag", "encoder.privileged", "main", "views", "supplementary",
                "tag_bias"],
    "ctmvm": ["encoder.tag", "encoder.privileged", "main", "views", "aggregators",
              "supplementary", "tag_bias"],
}  # fmt: skip


def test_every_learned_model_is_covered() -> None:
    assert set(EXPECTED_GRADIENTS) == set(LEARNED)
    assert set(LEARNED) < set(MODELS) and set(USES_SVE) < set(LEARNED)


def test_build_model_rejects_unknown_names() -> None:
    data = world()
    config = model_config("youtube")
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        build_model("nope", dims(data, config), config)


@pytest.mark.parametrize("name", LEARNED)
def test_score_all_is_a_probability_for_every_tag(name: str) -> None:
    data = world()
    model, config = fresh(name)
    users = data.users_in("test")[:7]
    model.eval()
    with torch.no_grad():
        scores = model.score_all(user_batch(data, config, users))  # user features only
    assert scores.shape == (len(users), data.n_tags)
    assert scores.dtype == torch.float32
    assert torch.isfinite(scores).all()
    assert ((scores > 0) & (scores < 1)).all()
    # not a constant: users and tags are told apart even before training
    assert scores.std(dim=1).min() > 0 and scores.std(dim=0).max() > 0


@pytest.mark.parametrize("name", LEARNED)
def test_loss_is_finite_and_reaches_the_expected_parameters(name: str) -> None:
    data = world()
    model, config = fresh(name)
    batch = training_batch(data, name, config)
    assert batch["label"].sum() > 0 and (batch["label"] == 0).sum() > 0
    loss, parts = model.loss(batch)
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert parts and all(np.isfinite(v) for v in parts.values())
    loss.backward()
    gradients = grads(model)
    assert all(torch.isfinite(g).all() for g in gradients.values())
    missing = [p for p in EXPECTED_GRADIENTS[name] if not reached(gradients, p)]
    assert not missing, f"{name}: backward did not reach {missing}"
    # the rows' own tags (target and history) get gradient, an absent tag gets none
    tag_grad = gradients["encoder.tag.weight"].abs().sum(dim=1)
    assert (tag_grad[batch["tag"].unique()] > 0).all()


def test_ctmvm_loss_has_the_four_terms_of_design_2() -> None:
    data = world()
    model, config = fresh("ctmvm")
    loss, parts = model.loss(training_batch(data, "ctmvm", config))
    assert set(parts) == {"predict", "aux", "supp", "amvm"}
    assert parts["amvm"] > 0
    expected = parts["predict"] + parts["aux"] + parts["supp"] + config["rho"] * parts["amvm"]
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)


def test_pkm_aggregator_is_constant_and_gets_no_gradient() -> None:
    """With one view the softmax of g is 1: PKM is the N = 1 case of AMVM."""
    data = world()
    model, config = fresh("sve_pkm")
    model.loss(training_batch(data, "sve_pkm", config))[0].backward()
    gradients = grads(model)
    assert all(
        float(g.abs().sum()) == 0 for n, g in gradients.items() if n.startswith("aggregators.")
    )


def test_views_sve_pkm_has_one_ctmvm_has_the_configured_number() -> None:
    data = world()
    fields = sorted(f for f, names in data.privileged_names.items() if names)
    assert fields == ["brand", "category"]
    pkm, _ = fresh("sve_pkm")
    ctmvm, config = fresh("ctmvm")
    assert config["n_views"] == 3  # FAST overrides the shipped 4: the config must be used
    for model, n in ((pkm, 1), (ctmvm, 3)):
        assert isinstance(model, CTMVM)
        assert sorted(model.views) == fields
        for field in fields:
            views = model.views[field](model.encoder.tag.weight)
            assert views.shape == (data.n_tags, n, config["dim"])


# ------------------------------------------------------------------------- stop-gradient
def rho_pair() -> tuple[nn.Module, nn.Module, dict]:
    """Two ctmvm models that differ only in ρ (0 and 10): same seed, same weights."""
    low, config = fresh("ctmvm", rho=0.0)
    high, _ = fresh("ctmvm", rho=10.0)
    for (name, a), b in zip(low.state_dict().items(), high.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    return low, high, training_batch(world(), "ctmvm", config)


def backward(model: nn.Module, batch: dict) -> dict[str, Tensor]:
    model.zero_grad()
    loss, parts = model.loss(batch)
    assert parts["amvm"] > 0
    loss.backward()
    return grads(model)


def test_mapping_loss_does_not_move_the_privileged_embeddings() -> None:
    """L is linear in ρ, so equal X_p-table gradients for ρ = 0 and ρ = 10 mean that the
    AMVM term contributes exactly nothing to them (stop_grad(X_p)), while the same change of
    ρ does change the gradients of the mapping views (the term is really there)."""
    low, high, batch = rho_pair()
    without, heavy = backward(low, batch), backward(high, batch)
    assert isinstance(low, CTMVM)
    for field in low.fields:
        table = f"encoder.privileged.{field}.weight"
        assert without[table].abs().sum() > 0
        torch.testing.assert_close(heavy[table], without[table], rtol=0, atol=1e-9)
        assert not torch.allclose(heavy[f"views.{field}.w2"], without[f"views.{field}.w2"])


def test_supplementary_loss_reaches_the_target_items_privileged_embedding() -> None:
    """The gradient that flows into the lookup of the *target item's* X_p is non-zero (it
    comes from Φ_supp) and does not depend on ρ (the mapping term adds nothing to it)."""
    low, high, batch = rho_pair()
    target_ids = {id(ids) for ids, _ in batch["item_privileged"].values()}
    flowing: list[Tensor] = []

    def capture(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        if id(inputs[0]) in target_ids:  # the X_p lookup, not the user's history bag
            output.register_hook(lambda grad: flowing.append(grad.clone()))

    runs = []
    for model in (low, high):
        handles = [t.register_forward_hook(capture) for t in model.encoder.privileged.values()]
        try:
            flowing.clear()
            backward(model, batch)
        finally:
            for handle in handles:
                handle.remove()
        assert len(flowing) == len(batch["item_privileged"])
        runs.append(list(flowing))
    for low, high in zip(*runs, strict=True):
        assert low.abs().sum() > 0
        torch.testing.assert_close(high, low, rtol=0, atol=1e-9)


# ------------------------------------------------------------------------- SVE weights
def test_weighted_bce_weight_scales_each_sample() -> None:
    logits = torch.tensor([0.3, -1.2, 2.0, 0.0], requires_grad=True)
    labels = torch.tensor([1.0, 0.0, 1.0, 0.0])
    ones = torch.ones(4)
    doubled = torch.tensor([1.0, 2.0, 1.0, 1.0])
    with torch.no_grad():
        per_sample = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
        base, heavier = weighted_bce(logits, labels, ones), weighted_bce(logits, labels, doubled)
    assert float(base) == pytest.approx(float(per_sample.mean()))
    # doubling sample 1's weight adds exactly its loss once more (over the batch size)
    assert float(heavier - base) == pytest.approx(float(per_sample[1]) / 4)
    base = weighted_bce(logits, labels, ones)
    (g_base,) = torch.autograd.grad(base, logits)
    (g_heavy,) = torch.autograd.grad(weighted_bce(logits, labels, doubled), logits)
    torch.testing.assert_close(g_heavy[1], 2 * g_base[1])
    torch.testing.assert_close(g_heavy[[0, 2, 3]], g_base[[0, 2, 3]])
    zero = torch.tensor([1.0, 0.0, 1.0, 1.0])
    (g_zero,) = torch.autograd.grad(weighted_bce(logits, labels, zero), logits)
    assert float(g_zero[1]) == 0.0


@pytest.mark.parametrize("name", LEARNED)
def test_doubling_every_weight_doubles_the_loss(name: str) -> None:
    """Every term of every model is weighted per sample (DESIGN §2: the weight scales the
    gradient of every per-sample loss)."""
    data = world()
    model, config = fresh(name)
    batch = training_batch(data, name, config)
    model.eval()
    with torch.no_grad():
        loss = model.loss(batch)[0]
        double = model.loss({**batch, "weight": 2 * batch["weight"]})[0]
    assert float(double) == pytest.approx(2 * float(loss), rel=1e-5)


def test_sve_rows_sum_to_the_coalition_size_per_positive_interaction() -> None:
    data = world()
    config = model_config("sve")
    rows = training_rows(data, "sve", config)
    weight = rows.weight.numpy().astype(np.float64)
    label = rows.label.numpy()
    sizes = np.bincount(rows.group)
    sums = np.bincount(rows.group, weights=weight)
    positive = np.zeros(len(sizes), dtype=bool)
    positive[rows.group[label == 1]] = True
    assert positive.any() and (~positive).any()
    np.testing.assert_allclose(sums[positive], sizes[positive], rtol=1e-5)
    assert (weight[label == 0] == 1).all()
    assert (weight > 0).all()
    # the weights are not trivially 1: SVE redistributes credit within coalitions
    assert np.abs(weight[label == 1] - 1).max() > 0.1
    # every interaction is one group, all its rows share its label
    assert (np.bincount(rows.group, weights=label) % sizes == 0).all()


def test_sve_weights_follow_the_configured_temperature() -> None:
    data = world()
    sharp = training_rows(data, "sve", model_config("sve", tau=0.05)).weight
    flat = training_rows(data, "sve", model_config("sve", tau=100.0)).weight
    assert (flat - 1).abs().max() < 0.05
    assert (sharp - 1).abs().max() > (flat - 1).abs().max()


@pytest.mark.parametrize("name", ["youtube", "utpm"])
def test_models_without_sve_train_on_unit_weights(name: str) -> None:
    data = world()
    rows = training_rows(data, name, model_config(name))
    assert len(rows.weight) == len(training_rows(data, "sve", model_config("sve")).weight)
    assert (rows.weight == 1).all()


# ------------------------------------------------------------------------- inference path
def perturb(model: nn.Module, scale: float = 0.5, seed: int = 1) -> None:
    """Move every weight far from its initialisation (the paths must agree for any weights,
    and at initialisation some inputs barely change the output)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=generator))


@pytest.mark.parametrize("name", LEARNED)
def test_training_and_inference_score_a_pair_alike(name: str) -> None:
    """The predict term of ``loss`` on one (user, tag, label 1, weight 1) row is
    -log score_all[user, tag]: the exported inference path is the trained one. Rows of
    clicked items are used, so CTMVM has X_p there (and must still predict with E_AGG)."""
    data = world()
    model, config = fresh(name)
    perturb(model)
    model.eval()
    batch = training_batch(data, name, config)
    has_item = torch.stack([w.sum(-1) > 0 for _, w in batch["item_privileged"].values()]).all(0)
    chosen = torch.nonzero(has_item).flatten()[:8]
    assert len(chosen) == 8
    with torch.no_grad():
        scores = model.score_all({k: v[chosen] for k, v in batch["user"].items()})
        for row, i in enumerate(chosen.tolist()):
            one = {
                "user": {k: v[i : i + 1] for k, v in batch["user"].items()},
                "tag": batch["tag"][i : i + 1],
                "item_privileged": {
                    f: (ids[i : i + 1], w[i : i + 1])
                    for f, (ids, w) in batch["item_privileged"].items()
                },
                "label": torch.ones(1),
                "weight": torch.ones(1),
                "group": torch.zeros(1, dtype=torch.int64),
            }
            predict = model.loss(one)[1]["predict"]
            expected = -float(torch.log(scores[row, batch["tag"][i]]))
            assert predict == pytest.approx(expected, rel=1e-4, abs=1e-5), (name, i)


@pytest.mark.parametrize("name", MODELS)
def test_score_all_stays_on_the_device_of_its_inputs(name: str) -> None:
    """Scored on the ``meta`` device (shapes only, no data): any tensor a model creates on
    a fixed device (the CPU) instead of its inputs' device shows up here without a GPU."""
    data = world()
    config = model_config(name if name in LEARNED else "youtube")
    if name in LEARNED:
        model = build_model(name, dims(data, config), config)
    else:
        model = counting_model(data, name)
    model = model.to("meta")
    user = user_batch(data, config, data.users_in("test")[:3])
    scores = model.score_all({k: v.to("meta") for k, v in user.items()})
    assert scores.device.type == "meta"
    assert scores.shape == (3, data.n_tags)


def test_model_classes_match_the_registry() -> None:
    expected = {"youtube": MainNetwork, "sve": MainNetwork, "utpm": UTPM, "sve_pkm": CTMVM,
                "ctmvm": CTMVM}  # fmt: skip
    for name, cls in expected.items():
        assert type(fresh(name)[0]) is cls


# ------------------------------------------------------------------------- counting baselines
def counting(name: str) -> tuple[nn.Module, FeatureStore]:
    data = world()
    store = FeatureStore(data, model_config("youtube")["max_history"], CPU)
    return counting_model(data, name), store


def test_mostpop_ranks_every_user_by_global_popularity() -> None:
    data = world()
    model, store = counting("mostpop")
    assert isinstance(model, MostPop)
    users = torch.as_tensor(data.users_in("test", "train"), dtype=torch.int64)
    scores = model.score_all(store.gather(users)).numpy()
    popularity = tag_popularity(data)
    assert scores.shape == (len(users), data.n_tags)
    assert (scores == scores[0]).all()
    np.testing.assert_allclose(scores[0], popularity, rtol=1e-6)
    assert popularity.max() > popularity.min()


def test_userpop_ranks_history_tags_first_by_frequency() -> None:
    data = world()
    model, store = counting("userpop")
    assert isinstance(model, UserPop)
    popularity = tag_popularity(data)
    users = data.users_in("test")
    scores = model.score_all(store.gather(torch.as_tensor(users, dtype=torch.int64))).numpy()
    checked = 0
    for row, u in enumerate(users):
        ids = store.tensors["hist_tags"][u].numpy()
        w = store.tensors["hist_tags_w"][u].numpy()
        freq = np.zeros(data.n_tags)
        np.add.at(freq, ids[w > 0], w[w > 0])
        ranking = np.argsort(-scores[row], kind="stable")
        seen = int((freq > 0).sum())
        if seen == 0:
            continue
        checked += 1
        # history tags first, by non-increasing frequency
        assert set(ranking[:seen]) == set(np.flatnonzero(freq > 0))
        assert (np.diff(freq[ranking[:seen]]) <= 1e-7).all()
        # the rest of the list by global popularity
        assert (np.diff(popularity[ranking[seen:]]) <= 1e-12).all()
    assert checked >= len(users) // 2


# ------------------------------------------------------------- sampling-bias correction
def test_negative_rate_counts_observed_and_drawn_negatives() -> None:
    tags = np.array([0, 1, 1, 2, 0])
    labels = np.array([1, 0, 0, 1, 0])
    rate = negative_tag_rate(tags, labels, 4, {"tag_negatives": 2})
    # observed: tag 0 once, tag 1 twice; drawn: 2 per positive (2 positives), uniform over 4
    assert rate.tolist() == pytest.approx([2.0, 3.0, 1.0, 1.0])
    assert random_tag_distribution(np.array([3, 3]), 4, 1.0).tolist() == pytest.approx(
        [1 / 6, 1 / 6, 1 / 6, 3 / 6]
    )


def test_score_prior_is_beta_log_rate_centred_and_zero_when_off() -> None:
    rate = np.array([1.0, 2.0, 4.0, 0.0])
    assert score_prior(rate, 0.0).tolist() == [0.0] * 4
    prior = score_prior(rate, 0.5)
    safe = np.array([1.0, 2.0, 4.0, 1.0])  # a never-drawn tag gets the smallest rate
    assert prior.tolist() == pytest.approx((0.5 * np.log(safe / safe.mean())).tolist(), rel=1e-6)
    assert prior[2] - prior[0] == pytest.approx(0.5 * np.log(4.0))


@pytest.mark.parametrize("name", LEARNED)
def test_score_prior_shifts_scoring_logits_and_never_the_training_loss(name: str) -> None:
    data = world()
    model, config = fresh(name)
    perturb(model)
    model.eval()
    batch = training_batch(data, name, config)
    with torch.no_grad():
        loss_before = model.loss(batch)[0]
        logits_before = torch.logit(model.score_all(batch["user"]).double())
        prior = torch.randn(model.score_prior.shape, generator=torch.Generator().manual_seed(3))
        model.score_prior.copy_(prior)
        assert torch.equal(model.loss(batch)[0], loss_before)
        logits_after = torch.logit(model.score_all(batch["user"]).double())
    assert torch.allclose(logits_after - logits_before, prior.double().expand_as(logits_after),
                          atol=1e-4)  # fmt: skip


@pytest.mark.parametrize("name", ["youtube", "ctmvm"])
def test_folded_export_path_keeps_the_score_prior(name: str) -> None:
    data = world()
    model, config = fresh(name)
    perturb(model)
    with torch.no_grad():
        model.score_prior.copy_(torch.linspace(-1.0, 1.0, model.score_prior.shape[0]))
    model.eval()
    user = training_batch(data, name, config)["user"]
    with torch.no_grad():
        expected = model.score_all(user)
        assert torch.allclose(FoldedScorer(model)(user), expected, atol=1e-6)
