"""Models: shapes, the training objective's terms, stop-gradients, SVE weights, the counting
parts every learned model starts from, and the inference path (DESIGN §2, §10)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from training.export.folded import FoldedScorer
from training.features import tag_cooccurrence_counts, tag_popularity, tags_used
from training.models import COUNTING, LEARNED, MODELS, USES_SVE, build_model
from training.models.ctmvm import CTMVM
from training.models.layers import CoOccurrence
from training.models.mlp import MainNetwork
from training.models.popularity import CoOccur, MostPop, UserPop
from training.models.utpm import UTPM
from training.objective import listwise_loss
from training.samples import sample_weights, training_samples
from training.trainer import FeatureStore, counting_model

from .model_fixtures import (
    CPU,
    dims,
    fresh_model,
    model_config,
    single_thread,
    training_batch,
    user_batch,
    world,
)

OFFSET_MODELS = [m for m in LEARNED if m != "youtube_plain"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


def fresh(name: str, seed: int = 0, **overrides: Any) -> tuple[nn.Module, dict[str, Any]]:
    config = model_config(name, **overrides)
    return fresh_model(world(), name, config, seed), config


def perturb(model: nn.Module, scale: float = 0.5, seed: int = 1) -> None:
    """Move every weight far from its initialisation (the paths must agree for any weights,
    and the zero-initialised residual layers would otherwise hide most of the network)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=generator))


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
    # softmax ignores a constant: the last bias of youtube_plain gets no gradient
    "youtube_plain": ["encoder.tag", "encoder.privileged", "encoder.attributes", "main.0",
                      "main.2", "main.4.weight"],
    "youtube": ["encoder.tag", "encoder.privileged", "encoder.attributes", "target", "main",
                "wide", "tag_bias", "repeat_gate", "offset.log_scale"],
    "sve": ["encoder.tag", "encoder.privileged", "target", "main", "wide", "tag_bias"],
    # and target_out's bias adds one constant to every tag's logit: its gradient is 0 up
    # to rounding (the test passed or failed with the CPU's summation order)
    "utpm": ["encoder.tag", "encoder.privileged", "queries", "within", "across", "latent",
             "dense", "target_out.weight", "tag_bias"],
    "sve_pkm": ["encoder.tag", "encoder.privileged", "main", "views", "supplementary",
                "tag_bias"],
    "ctmvm": ["encoder.tag", "encoder.privileged", "main", "views", "aggregators",
              "supplementary", "tag_bias", "repeat_gate"],
}  # fmt: skip


def test_every_model_is_covered() -> None:
    assert set(EXPECTED_GRADIENTS) == set(LEARNED)
    assert set(LEARNED) | set(COUNTING) == set(MODELS)
    assert set(USES_SVE) < set(LEARNED)


def test_build_model_rejects_unknown_names() -> None:
    config = model_config("youtube")
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        build_model("nope", dims(world(), config), config)


def test_model_classes_match_the_registry() -> None:
    expected = {"youtube_plain": MainNetwork, "youtube": MainNetwork, "sve": MainNetwork,
                "utpm": UTPM, "sve_pkm": CTMVM, "ctmvm": CTMVM}  # fmt: skip
    for name, cls in expected.items():
        assert type(fresh(name)[0]) is cls
    plain = fresh("youtube_plain")[0]
    assert plain.target is None and plain.wide is None and plain.offset is None


@pytest.mark.parametrize("name", LEARNED)
def test_score_all_is_a_distribution_over_every_tag(name: str) -> None:
    data = world()
    model, config = fresh(name)
    perturb(model)
    users = data.users_in("test")[:7]
    model.eval()
    with torch.no_grad():
        scores = model.score_all(user_batch(data, config, users))  # user features only
    assert scores.shape == (len(users), data.n_tags)
    assert scores.dtype == torch.float32
    assert ((scores > 0) & (scores < 1)).all()
    torch.testing.assert_close(scores.sum(dim=1), torch.ones(len(users)))
    assert scores.std(dim=1).min() > 0 and scores.std(dim=0).max() > 0


def same_order(scores: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> bool:
    """Per row, ``scores`` orders the masked tags like ``reference`` wherever
    ``reference`` is strict (ties may break either way)."""
    for row in range(len(scores)):
        chosen = np.flatnonzero(mask[row])
        order = chosen[np.argsort(-reference[row, chosen], kind="stable")]
        strict = np.diff(reference[row, order]) < -1e-9
        if not (np.diff(scores[row, order])[strict] < 0).all():
            return False
    return True


@pytest.mark.parametrize("name", OFFSET_MODELS)
def test_an_untrained_model_is_userpop_on_used_tags_then_cooccur(name: str) -> None:
    """Never below counting by construction: with the residual at zero a learned model
    ranks the user's own tags first, exactly like userpop, then the others exactly like
    cooccur (the better counting baseline on tags new to the user)."""
    data = world()
    model, config = fresh(name)
    model.eval()
    users = data.users_in("test", "valid")
    user = user_batch(data, config, users)
    with torch.no_grad():
        learned = model.score_all(user).numpy()
        userpop = counting_model(data, "userpop").score_all(user).numpy()
        cooccur = counting_model(data, "cooccur").score_all(user).numpy()
    used = (
        torch.zeros(len(users), data.n_tags)
        .scatter_add(1, user["hist_tags"], user["hist_tags_w"])
        .numpy()
        > 0
    )
    assert used.any() and (~used).any()
    assert same_order(learned, userpop, used)
    assert same_order(learned, cooccur, ~used)
    lowest_used = np.where(used, learned, np.inf).min(axis=1)
    highest_new = np.where(used, -np.inf, learned).max(axis=1)
    assert (lowest_used[used.any(axis=1)] > highest_new[used.any(axis=1)]).all()


@pytest.mark.parametrize("name", [m for m in OFFSET_MODELS if m != "utpm"])
def test_a_users_own_tags_keep_the_counting_order_after_training(name: str) -> None:
    """repeat_mode counting: whatever the weights, the tags a user used are ordered by their
    history frequency and move only as a block (the per-user gate)."""
    data = world()
    model, config = fresh(name)
    perturb(model)
    model.eval()
    users = data.users_in("test")
    user = user_batch(data, config, users)
    with torch.no_grad():
        logits = model.logits_all(user).numpy()
    freq = (
        torch.zeros(len(users), data.n_tags)
        .scatter_add(1, user["hist_tags"], user["hist_tags_w"])
        .numpy()
    )
    checked = 0
    for row in range(len(users)):
        seen = np.flatnonzero(freq[row] > 0)
        if len(seen) < 2:
            continue
        checked += 1
        by_freq = seen[np.argsort(-freq[row, seen], kind="stable")]
        strict = np.diff(freq[row, by_freq]) < -1e-7
        assert (np.diff(logits[row, by_freq])[strict] < 0).all()
    assert checked > 5


@pytest.mark.parametrize("name", LEARNED)
def test_loss_is_finite_and_reaches_the_expected_parameters(name: str) -> None:
    data = world()
    model, config = fresh(name)
    perturb(model)
    batch = training_batch(data, name, config)
    assert batch["targets"].sum() > 0
    loss, parts = model.loss(batch)
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert parts and all(np.isfinite(v) for v in parts.values())
    loss.backward()
    gradients = grads(model)
    assert all(torch.isfinite(g).all() for g in gradients.values())
    missing = [p for p in EXPECTED_GRADIENTS[name] if not reached(gradients, p)]
    assert not missing, f"{name}: backward did not reach {missing}"


@pytest.mark.parametrize("name", LEARNED)
def test_the_predict_term_is_the_listwise_loss_of_the_served_scores(name: str) -> None:
    """Training optimises exactly the scores the exported path serves."""
    data = world()
    model, config = fresh(name)
    perturb(model)
    model.eval()
    batch = training_batch(data, name, config)
    with torch.no_grad():
        predict = model.loss(batch)[1]["predict"]
        served = torch.log(model.score_all(batch["user"]))
    expected = float(listwise_loss(served, batch["targets"]))
    assert predict == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("name", ["youtube", "ctmvm"])
def test_candidate_logits_equal_the_all_tags_logits(name: str) -> None:
    """The privileged rows score a few candidates per user with the same function as the
    listwise term scores every tag."""
    data = world()
    model, config = fresh(name)
    perturb(model)
    model.eval()
    user = training_batch(data, name, config)["user"]
    tags = torch.randint(0, data.n_tags, (user["hist_tags"].shape[0], 5))
    with torch.no_grad():
        every = model.logits_all(user)
        x_user = model.encoder(user)
        if isinstance(model, CTMVM):
            extra, matches, _ = model.aggregate(x_user, model.encoder.tag(tags))
            some = model.head(user, x_user, tags, extra, matches)
        else:
            some = model.head(user, x_user, tags)
    torch.testing.assert_close(some, every.gather(1, tags), rtol=1e-5, atol=1e-5)


def test_ctmvm_loss_has_the_four_terms_of_design_2_and_the_item_tag_head() -> None:
    """Design 2's four terms, plus P(tag | X_p) over the train (item, tag) pairs that
    teaches the privileged encoder what an item's features say about its tags."""
    data = world()
    model, config = fresh("ctmvm")
    perturb(model)
    loss, parts = model.loss(training_batch(data, "ctmvm", config))
    assert set(parts) == {"predict", "aux", "supp", "amvm", "item_tag"}
    assert parts["amvm"] > 0 and parts["item_tag"] > 0
    expected = parts["predict"] + parts["aux"] + parts["supp"] + config["rho"] * parts["amvm"]
    expected += model.item_tag_weight * parts["item_tag"]
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)


def test_distillation_adds_the_weighted_kl_term() -> None:
    """TiMiRec option: λ_d · T² · KL(soft view target || g's ratings) joins the loss."""
    data = world()
    model, config = fresh("ctmvm", distill_weight=1.0, distill_temperature=0.5)
    perturb(model)
    batch = training_batch(data, "ctmvm", config)
    rows = batch["rows"]
    privileged = model.privileged_loss(rows)
    assert privileged[1]["distill"] > 0
    base, _ = fresh("ctmvm", distill_weight=0.0, distill_temperature=0.5)
    base.load_state_dict(model.state_dict())
    without = base.privileged_loss(rows)[0]
    gap = float((privileged[0] - without).detach())
    assert gap == pytest.approx(privileged[1]["distill"], rel=1e-4)


def test_soft_aux_view_mixes_the_views_by_their_distance() -> None:
    data = world()
    hard, config = fresh("ctmvm")
    soft, _ = fresh("ctmvm", aux_view="soft")
    perturb(hard)
    soft.load_state_dict(hard.state_dict())
    rows = training_batch(data, "ctmvm", config)["rows"]
    with torch.no_grad():
        assert hard.privileged_loss(rows)[1]["aux"] != soft.privileged_loss(rows)[1]["aux"]


def test_pkm_aggregator_is_constant_and_gets_no_gradient() -> None:
    """With one view the softmax of g is 1: PKM is the N = 1 case of AMVM."""
    data = world()
    model, config = fresh("sve_pkm")
    perturb(model)
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


def test_privileged_rows_keep_their_item_and_mask_accidental_hits() -> None:
    data = world()
    config = model_config("ctmvm", privileged_negatives=64)
    rows = training_batch(data, "ctmvm", config)["rows"]
    tags, mask = rows["tags"], rows["negative_mask"]
    assert tags.shape[1] == 1 + 64 and mask.shape == (tags.shape[0], 64)
    # a negative equal to the row's own positive is masked (world() has only 24 tags)
    same = tags[:, 1:] == tags[:, :1]
    assert same.any() and not mask[same].any()
    for _field, (ids, weights) in rows["item_privileged"].items():
        assert ids.shape[0] == tags.shape[0] and (weights.sum(-1) > 0).any()


# ------------------------------------------------------------------------- stop-gradient
def rho_pair() -> tuple[nn.Module, nn.Module, dict]:
    """Two ctmvm models that differ only in ρ (0 and 10): same seed, same weights."""
    low, config = fresh("ctmvm", rho=0.0)
    high, _ = fresh("ctmvm", rho=10.0)
    perturb(low)
    high.load_state_dict(low.state_dict())
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
    target_ids = {id(ids) for ids, _ in batch["rows"]["item_privileged"].values()}
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
        assert len(flowing) == len(target_ids)
        runs.append(list(flowing))
    for a, b in zip(*runs, strict=True):
        assert a.abs().sum() > 0
        torch.testing.assert_close(b, a, rtol=0, atol=1e-9)


# ------------------------------------------------------------------------- SVE weights
def positive_rows(name: str, **overrides: Any):
    data = world()
    rows = data.single_tag_samples("train")
    return data, rows, sample_weights(data, rows, model_config(name, **overrides))


def test_sve_weights_sum_to_the_coalition_size_per_positive_interaction() -> None:
    _, rows, weight = positive_rows("sve")
    sizes = np.bincount(rows.interaction)
    sums = np.bincount(rows.interaction, weights=weight.astype(np.float64))
    label = np.zeros(len(sizes), dtype=np.int8)
    label[rows.interaction] = rows.label
    positive = (sizes > 0) & (label == 1)
    negative = (sizes > 0) & (label == 0)
    assert positive.any() and negative.any()
    np.testing.assert_allclose(sums[positive], sizes[positive], rtol=1e-5)
    assert (weight[rows.label == 0] == 1).all()
    assert np.abs(weight[rows.label == 1] - 1).max() > 0.1


def test_count_credit_spreads_the_weights_more_than_the_fraction_credit() -> None:
    """φ in clicks (the paper) rather than as a fraction of the user's clicks: the same τ
    then separates decisive tags instead of leaving the weights nearly flat."""
    _, rows, count = positive_rows("sve", credit_scale="count", tau=0.5)
    _, _, fraction = positive_rows("sve", credit_scale="fraction", tau=0.5)
    positive = rows.label == 1
    spread = np.abs(count[positive] - 1).mean()
    assert spread > 2 * np.abs(fraction[positive] - 1).mean()


def test_sve_weights_follow_the_configured_temperature() -> None:
    _, _, sharp = positive_rows("sve", tau=0.05)
    _, _, flat = positive_rows("sve", tau=1000.0)
    assert np.abs(flat - 1).max() < 0.05
    assert np.abs(sharp - 1).max() > np.abs(flat - 1).max()


@pytest.mark.parametrize(("name", "overrides"), [("youtube", {}), ("sve", {"sve": False})])
def test_without_sve_every_target_has_unit_mass(name: str, overrides: dict) -> None:
    """Models without SVE, and SVE models of a family that switches it off."""
    data = world()
    samples = training_samples(data, name, model_config(name, **overrides))
    assert (samples.row_weight == 1).all()
    weighted = training_samples(data, "sve", model_config("sve"))
    assert not (weighted.row_weight == 1).all()
    assert samples.targets.values.sum() == pytest.approx(weighted.targets.values.sum(), rel=1e-4)


def test_targets_are_the_held_out_positive_tags_of_train_users() -> None:
    data = world()
    samples = training_samples(data, "youtube", model_config("youtube"))
    rows = data.single_tag_samples("train")
    positive = rows.label == 1
    assert set(samples.users.tolist()) == set(rows.user[positive].tolist())
    dense = samples.targets.dense(np.arange(len(samples)), data.n_tags)
    expected = np.zeros_like(dense)
    position = {u: i for i, u in enumerate(samples.users)}
    for u, t in zip(rows.user[positive], rows.tag[positive], strict=True):
        expected[position[u], t] += 1
    np.testing.assert_array_equal(dense, expected)
    mean = training_samples(data, "youtube", model_config("youtube", target_mass="mean"))
    np.testing.assert_array_equal(
        mean.targets.dense(np.arange(len(samples)), data.n_tags), (expected > 0).astype(float)
    )


def test_real_item_negatives_are_kept_and_never_overlap_the_targets() -> None:
    data = world()  # synthetic: unclicked impressions are real negatives
    samples = training_samples(data, "youtube", model_config("youtube"))
    index = np.arange(len(samples))
    negatives = samples.negatives.dense(index, data.n_tags) > 0
    targets = samples.targets.dense(index, data.n_tags) > 0
    assert negatives.any() and not (negatives & targets).any()


# ------------------------------------------------------------------------- counting
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
        assert set(ranking[:seen]) == set(np.flatnonzero(freq > 0))
        assert (np.diff(freq[ranking[:seen]]) <= 1e-7).all()
        assert (np.diff(popularity[ranking[seen:]]) <= 1e-12).all()
    assert checked >= len(users) // 2


def test_cooccur_is_the_history_weighted_conditional_of_train_users() -> None:
    data = world()
    model, store = counting("cooccur")
    assert isinstance(model, CoOccur)
    used = tags_used(data).toarray()[data.users_in("train")] > 0
    both = used.T.astype(float) @ used.astype(float)
    conditional = np.divide(both, np.diag(both)[:, None], out=np.zeros_like(both),
                            where=np.diag(both)[:, None] > 0)  # fmt: skip
    users = data.users_in("test")[:10]
    user = store.gather(torch.as_tensor(users, dtype=torch.int64))
    freq = (
        torch.zeros(len(users), data.n_tags)
        .scatter_add(1, user["hist_tags"], user["hist_tags_w"])
        .numpy()
    )
    popularity = tag_popularity(data)
    expected = freq @ conditional + 1e-3 * popularity / popularity.max()
    np.testing.assert_allclose(model.score_all(user).numpy(), expected, rtol=1e-5, atol=1e-7)


def test_cooccurrence_leaves_a_counted_user_out() -> None:
    """Hand-made counts: users A {0, 1}, B {0, 1}, C {0, 2}. For user A (history {0}) with
    A left out, P(1 | 0) = 1/2 (B of B, C) and P(2 | 0) = 1/2; without leaving out, 2/3
    and 1/3. Candidates and all tags agree."""
    layer = CoOccurrence(3)
    used = torch.tensor([[1.0, 1, 0], [1, 1, 0], [1, 0, 1]])
    layer.counts.copy_(used.T @ used)
    user = {"hist_tags": torch.tensor([[0]]), "hist_tags_w": torch.tensor([[1.0]])}
    kept = layer(user, None)
    torch.testing.assert_close(kept, torch.tensor([[1.0, 2 / 3, 1 / 3]]))
    out = layer({**user, "counted_tags": used[:1]}, None)
    torch.testing.assert_close(out, torch.tensor([[1.0, 0.5, 0.5]]))
    some = layer({**user, "counted_tags": used[:1]}, torch.tensor([[2, 1]]))
    torch.testing.assert_close(some, torch.tensor([[0.5, 0.5]]))


# ------------------------------------------------------------------------- inference path
@pytest.mark.parametrize("name", MODELS)
def test_score_all_stays_on_the_device_of_its_inputs(name: str) -> None:
    """Scored on the ``meta`` device (shapes only, no data): any tensor a model creates on
    a fixed device (the CPU) instead of its inputs' device shows up here without a GPU."""
    data = world()
    config = model_config(name if name in LEARNED else "youtube")
    model = fresh(name)[0] if name in LEARNED else counting_model(data, name)
    model = model.to("meta")
    user = user_batch(data, config, data.users_in("test")[:3])
    scores = model.score_all({k: v.to("meta") for k, v in user.items()})
    assert scores.device.type == "meta"
    assert scores.shape == (3, data.n_tags)


@pytest.mark.parametrize("name", ["youtube_plain", "youtube", "sve", "sve_pkm", "ctmvm"])
def test_folded_scorer_computes_score_all(name: str) -> None:
    data = world()
    model, config = fresh(name)
    perturb(model)
    model.eval()
    user = user_batch(data, config, data.users_in("test", "valid"))
    with torch.no_grad():
        torch.testing.assert_close(FoldedScorer(model)(user), model.score_all(user),
                                   rtol=1e-4, atol=1e-7)  # fmt: skip


def test_cooccurrence_counts_come_from_train_users_only() -> None:
    data = world()
    counts = tag_cooccurrence_counts(data)
    used = tags_used(data).toarray()
    assert not used[data.users_in("valid", "test")].any()
    np.testing.assert_array_equal(counts, used.T @ used)


# ------------------------------------------------------------------------- CAMN router
def test_router_keeps_the_top_q_tags_and_spends_the_coalition_size() -> None:
    from training.models.router import CreditRouter, routed_targets

    torch.manual_seed(0)
    router = CreditRouter(user_dim=4, dim=3, hidden=5, top_q=2)
    table = nn.Embedding(6, 3)
    coalitions = {
        "owner": torch.tensor([0, 0, 1]),
        "tags": torch.tensor([[1, 2, 3], [4, 0, 0], [2, 5, 0]]),
        "mask": torch.tensor([[True, True, True], [True, False, False], [True, True, False]]),
    }
    p = router(torch.randn(3, 4), table(coalitions["tags"]), coalitions["mask"])
    torch.testing.assert_close(p.sum(dim=1), torch.ones(3))
    assert int((p[0] > 0).sum()) == 2  # top 2 of 3
    assert (p[1, 1:] == 0).all() and (p[2, 2] == 0)
    p = p.detach()
    diversity = CreditRouter.diversity(p)
    assert float(diversity) == pytest.approx(float(((1 - (p**2).sum(1)) / 2).mean()))
    targets, _ = routed_targets(router, torch.randn(2, 4), table, coalitions, 6)
    # user 0: 3 + 1 units of mass, user 1: 2
    torch.testing.assert_close(targets.sum(dim=1), torch.tensor([4.0, 2.0]))
    assert float(targets[0, 4]) == pytest.approx(1.0)


def test_a_router_model_trains_its_router_through_the_listwise_loss() -> None:
    data = world()
    model, config = fresh("sve", credit_method="router", router_top_q=2)
    perturb(model)
    batch = training_batch(data, "sve", config)
    assert "coalitions" in batch
    loss, parts = model.loss(batch)
    assert "diversity" in parts and torch.isfinite(loss)
    loss.backward()
    assert reached(grads(model), "router")
    samples = training_samples(data, "sve", config)
    assert (samples.row_weight == 1).all()  # the router replaces the SVE weights
