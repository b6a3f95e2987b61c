"""The training loop: epochs and batches, model selection, determinism, recovery of the
planted truth of a synthetic world, configuration errors, and the ``train`` command."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import rankdata
from torch import nn

from training.cli import main
from training.config import family_config_path, load_config, resolve
from training.data.processed import ProcessedDataset
from training.diagnose import diagnose
from training.models import build_model
from training.models.popularity import MostPop
from training.runs import CHECKPOINT
from training.trainer import FeatureStore, counting_model, dims_of, evaluate, train_model
from training.trainer import test_report as report_on_test_users  # not a test

from .model_fixtures import CPU, model_config, single_thread, training_batch, world


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


# ------------------------------------------------------------------------- batches
def test_a_batch_holds_the_users_targets_and_their_privileged_rows() -> None:
    data = world()
    config = model_config("ctmvm", batch_size=8, privileged_negatives=5)
    batch = training_batch(data, "ctmvm", config)
    assert batch["user"]["hist_tags"].shape[0] == 8
    assert batch["targets"].shape == (8, data.n_tags) and (batch["targets"].sum(1) > 0).all()
    # a train user carries its own tags in the co-occurrence counts (left out there)
    assert batch["user"]["counted_tags"].shape == (8, data.n_tags)
    assert (batch["user"]["counted_tags"].sum(1) > 0).all()
    rows = batch["rows"]
    assert rows["tags"].shape[1] == 1 + 5
    assert rows["weights"].shape == (rows["tags"].shape[0], 1)
    # a row's positive is a target of its user
    owner = torch.as_tensor(
        [int(np.flatnonzero(np.all(
            batch["user"]["hist_tags"].numpy() == rows["user"]["hist_tags"][r].numpy(), axis=1
        ))[0]) for r in range(rows["tags"].shape[0])]
    )  # fmt: skip
    assert (batch["targets"][owner, rows["tags"][:, 0]] > 0).all()
    youtube = training_batch(data, "youtube", model_config("youtube", batch_size=8))
    assert "rows" not in youtube


def test_counting_models_need_no_training() -> None:
    result, store = train_model(world(), "mostpop", model_config("youtube"), progress=False)
    assert isinstance(result.model, MostPop)
    assert result.history == [] and result.best_epoch == 0
    assert set(store.tensors) >= {"hist_tags", "hist_tags_w", "attributes"}


def test_the_selected_epoch_is_the_best_on_validation_users() -> None:
    """A high learning rate makes validation NDCG peak early, so training stops after
    ``patience`` epochs without improvement (counted once ``min_epochs`` have passed) and
    must hand back the peak epoch's model. Epoch 0, the untrained model, is a candidate."""
    data = world()
    config = model_config(
        "youtube", epochs=8, patience=2, min_epochs=1, lr=0.05, selection_metric="ndcg@10"
    )
    result, store = train_model(data, "youtube", config, seed=0, progress=False)
    history = result.history
    assert [h["epoch"] for h in history] == list(range(len(history)))
    assert "loss" not in history[0]  # epoch 0 is scored before any training
    scores = [h["valid_ndcg@10"] for h in history]
    assert result.best_epoch == int(np.argmax(scores))
    assert len(history) - 1 < 8, f"scenario needs an early peak: {scores}"
    assert len(history) - 1 - max(result.best_epoch, 1) == 2  # stopped after `patience`
    # the returned model is the selected epoch's, not the last one's
    valid = evaluate(result.model, store, data, data.users_in("valid"))
    assert valid["ndcg@10"] == pytest.approx(max(scores), abs=1e-9)
    assert valid["ndcg@10"] >= scores[-1]
    assert all(np.isfinite(h["loss"]) and h["loss"] > 0 for h in history[1:])
    assert all("valid_novel_ndcg@10" in h and "valid_nll" in h for h in history)


# ------------------------------------------------------------------------- determinism
def train_twice(name: str, seeds: tuple[int, int]) -> list[tuple[dict, list, dict]]:
    data = world()
    config = model_config(name, epochs=2, patience=5)
    runs = []
    for seed in seeds:
        result, store = train_model(data, name, config, seed=seed, progress=False)
        report = report_on_test_users(result.model, store, data, config["credit"]).metrics
        runs.append((result.model.state_dict(), result.history, report))
    return runs


def same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name", ["youtube", "ctmvm"])
def test_training_is_deterministic_for_a_seed(name: str) -> None:
    (state_a, history_a, report_a), (state_b, history_b, report_b) = train_twice(name, (0, 0))
    assert same_state(state_a, state_b)
    untimed = [[{k: v for k, v in e.items() if k != "epoch_seconds"} for e in h]
               for h in (history_a, history_b)]  # fmt: skip
    assert untimed[0] == untimed[1]
    assert all("epoch_seconds" in epoch for epoch in history_a[1:])
    assert report_a == report_b


def test_another_seed_trains_another_model() -> None:
    (state_a, history_a, _), (state_b, history_b, _) = train_twice("ctmvm", (0, 1))
    assert not same_state(state_a, state_b)
    assert [h["loss"] for h in history_a[1:]] != [h["loss"] for h in history_b[1:]]


# ------------------------------------------------------------------------- planted truth
PLANTED_WORLD = {"users": 600, "items": 300, "tags": 60}
MARGIN = 0.01


def shipped(name: str, **overrides: int) -> dict:
    """The shipped (tuned) synthetic configuration of ``name``."""
    return {**resolve(load_config(family_config_path("synthetic")), name), **overrides}


def scores_of(model: nn.Module, store: FeatureStore, users: np.ndarray) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return model.score_all(store.gather(torch.as_tensor(users, dtype=torch.int64))).numpy()


def affinity_correlation(scores: np.ndarray, data: ProcessedDataset, users: np.ndarray) -> float:
    """Mean over users of the Spearman correlation between the model's tag scores and the
    planted user–tag affinity (mapped to processed ids through ``raw_index``)."""
    raw_users, raw_tags = data.raw_index["user"][users], data.raw_index["tag"]
    affinity = data.truth["user_tag_affinity"][raw_users][:, raw_tags]
    a, b = rankdata(scores, axis=1), rankdata(affinity, axis=1)
    a -= a.mean(axis=1, keepdims=True)
    b -= b.mean(axis=1, keepdims=True)
    return float(np.mean((a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))))


def decisive_tag_auc(scores: np.ndarray, data: ProcessedDataset, users: np.ndarray) -> float:
    """For each held-out click of these users whose item has decisive and non-decisive tags:
    the share of (decisive, non-decisive) tag pairs the model's scores order correctly
    (ties count half); the mean over those clicks. 0.5 = blind to the planted tags."""
    truth, raw_index = data.truth, data.raw_index
    tag_of_raw = np.full(int(raw_index["tag"].max()) + 1, -1)
    tag_of_raw[raw_index["tag"]] = np.arange(data.n_tags)
    row_of = np.full(data.n_users, -1)
    row_of[users] = np.arange(len(users))
    offsets, decisive = truth["item_decisive_offsets"], truth["item_decisive_tags"]
    clicks = np.flatnonzero(
        data.inter_is_sample & (data.inter_label == 1) & (row_of[data.inter_user] >= 0)
    )
    shares = []
    for i in clicks:
        raw_item = raw_index["item"][data.inter_item[i]]
        planted = decisive[offsets[raw_item] : offsets[raw_item + 1]]
        tags = data.inter_tags.values[data.inter_tags.offsets[i] : data.inter_tags.offsets[i + 1]]
        is_decisive = np.isin(tags, tag_of_raw[planted])
        if is_decisive.all() or not is_decisive.any():
            continue
        row = scores[row_of[data.inter_user[i]]]
        diff = row[tags[is_decisive]][:, None] - row[tags[~is_decisive]][None, :]
        shares.append(float(((diff > 0) + 0.5 * (diff == 0)).mean()))
    assert len(shares) >= 200, "too few held-out clicks to measure anything"
    return float(np.mean(shares))


def recovery(model: nn.Module, store: FeatureStore, data: ProcessedDataset) -> dict[str, float]:
    users = data.users_in("test")
    scores = scores_of(model, store, users)
    return {
        "affinity_spearman": affinity_correlation(scores, data, users),
        "decisive_auc": decisive_tag_auc(scores, data, users),
    }


def recovers_better(candidate: dict[str, float], baseline: dict[str, float]) -> bool:
    """``candidate`` beats ``baseline`` on both measures by at least MARGIN."""
    return all(candidate[k] >= baseline[k] + MARGIN for k in baseline)


def test_ctmvm_learns_what_the_privileged_features_say_and_beats_popularity() -> None:
    """Same world, shipped configuration (1 epoch), seed 0; test users only.

    The privileged pathway learned something when its supplementary network, handed the
    true X_p of each user's held-out items, ranks their tags far better than handed the
    user's history X_p (``training.diagnose``); an untrained one cannot tell them apart.
    And the served profile (the counting base plus what was learned) recovers the planted
    affinities and decisive tags better than plain popularity.

    Measured when written (supplementary NDCG@10 true / history X_p): trained 0.85 / 0.47,
    untrained 0.15 / 0.13; recovery (Spearman / decisive-tag AUC): ctmvm 0.32 / 0.63,
    mostpop 0.20 / 0.61."""
    data = world(**PLANTED_WORLD)
    config = shipped("ctmvm", epochs=1)
    result, store = train_model(data, "ctmvm", config, seed=0, progress=False)
    by_input = {row["input"]: row for row in diagnose(result.model, store, data)
                if row["scorer"] == "supplementary network"}  # fmt: skip
    assert by_input["true target X_p"]["ndcg@10"] > by_input["history X_p"]["ndcg@10"] + 0.2
    torch.manual_seed(0)
    untrained = build_model("ctmvm", dims_of(data, store), config)
    blind = {row["input"]: row for row in diagnose(untrained, store, data)
             if row["scorer"] == "supplementary network"}  # fmt: skip
    gap = blind["true target X_p"]["ndcg@10"] - blind["history X_p"]["ndcg@10"]
    assert abs(gap) < 0.1, blind  # the check can fail: nothing learned, nothing to see
    measured = recovery(result.model, store, data)
    popularity = recovery(counting_model(data, "mostpop"), store, data)
    assert recovers_better(measured, popularity), (measured, popularity)


# ------------------------------------------------------------------------- configuration
HANDMADE = {
    "defaults": {
        "dim": 8, "hidden": [16, 8], "lr": 0.01, "weight_decay": 0.0, "batch_size": 64,
        "epochs": 2, "patience": 2, "tag_negatives": 2, "max_history": 50,
        "credit": "contains", "tau": 0.5,
    },
    "models": {"ctmvm": {"rho": 0.1, "n_views": 2, "lr": 0.002}, "sve_pkm": {"rho": 0.1}},
}  # fmt: skip


def test_resolve_merges_the_model_section_over_the_defaults() -> None:
    ctmvm = resolve(HANDMADE, "ctmvm")
    assert ctmvm["lr"] == 0.002 and ctmvm["n_views"] == 2 and ctmvm["dim"] == 8
    assert resolve(HANDMADE, "youtube")["lr"] == 0.01
    assert "rho" not in resolve(HANDMADE, "youtube")


@pytest.mark.parametrize("missing", ["dim", "lr", "tau", "max_history"])
def test_resolve_names_a_missing_default(missing: str) -> None:
    defaults = {k: v for k, v in HANDMADE["defaults"].items() if k != missing}
    config = {**HANDMADE, "defaults": defaults}
    with pytest.raises(ValueError, match=rf"my.json: missing hyper-parameter\(s\) {missing} "):
        resolve(config, "youtube", source="my.json")


def test_resolve_names_a_missing_model_hyper_parameter() -> None:
    config = {**HANDMADE, "models": {"sve_pkm": {"rho": 0.1}, "ctmvm": {"rho": 0.1}}}
    with pytest.raises(ValueError, match="n_views for ctmvm"):
        resolve(config, "ctmvm")
    with pytest.raises(ValueError, match="rho for sve_pkm"):
        resolve({**HANDMADE, "models": {}}, "sve_pkm")
    resolve({**HANDMADE, "models": {}}, "utpm")  # no model-specific requirement


@pytest.mark.parametrize(
    ("change", "message"),
    [({"credit": "both"}, "credit must be 'contains' or 'covers'"), ({"tau": 0}, "tau must be")],
)
def test_resolve_rejects_bad_values(change: dict, message: str) -> None:
    config = {**HANDMADE, "defaults": {**HANDMADE["defaults"], **change}}
    with pytest.raises(ValueError, match=message):
        resolve(config, "sve")


def test_bad_json_is_reported_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{\n  "defaults": {\n    "dim": 8,,\n  }\n}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}:3: invalid JSON"):
        load_config(path)
    no_defaults = tmp_path / "empty.json"
    no_defaults.write_text('{"models": {}}', encoding="utf-8")
    with pytest.raises(ValueError, match="needs a 'defaults' object"):
        load_config(no_defaults)


# ------------------------------------------------------------------------- the train command
METRIC_KEYS = {f"{m}@{k}" for m in ("precision", "recall", "hr", "ndcg") for k in (5, 10, 20)}
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("data") / "synthetic"
    args = ["--users", "200", "--items", "80", "--tags", "30", "--out", str(out)]
    assert main(["prepare", "--dataset", "synthetic", *args]) == 0
    return out


def check_run(run: Path, model: str, epochs: int) -> dict:
    for name in (CHECKPOINT, "config.json", "metrics.json", "history.json"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) >= METRIC_KEYS | {"test_users", "train_seconds"}
    assert all(0.0 <= metrics[k] <= 1.0 for k in METRIC_KEYS)
    assert metrics["test_users"] > 0 and metrics["train_seconds"] >= 0
    config = json.loads((run / "config.json").read_text())
    assert config["model"] == model and config["seed"] == 0
    assert config["hyperparameters"]["epochs"] == epochs
    history = json.loads((run / "history.json").read_text())
    assert len(history) == epochs + 1  # epoch 0 is the untrained model, scored first
    assert "valid_ndcg@10" in history[0] and {"loss", "valid_ndcg@10"} <= set(history[-1])
    assert (run / "training_curve.png").read_bytes()[:8] == PNG
    return metrics


def test_train_ctmvm_writes_a_complete_run(
    prepared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    args = ["--data", str(prepared), "--model", "ctmvm", "--out", str(run), "--epochs", "1"]
    assert main(["train", *args, "--device", "cpu"]) == 0
    metrics = check_run(run, "ctmvm", epochs=1)
    summary = json.loads(capsys.readouterr().out.splitlines()[0])
    assert summary["model"] == "ctmvm" and summary["ndcg@10"] == round(metrics["ndcg@10"], 4)
    # the checkpoint alone rebuilds the trained model, and it scores like the run did
    checkpoint = torch.load(run / CHECKPOINT, weights_only=False)
    assert checkpoint["model"] == "ctmvm"
    data = ProcessedDataset.load(prepared)
    store = FeatureStore(data, checkpoint["config"]["max_history"], CPU)
    model = build_model("ctmvm", dims_of(data, store), checkpoint["config"])
    model.load_state_dict(checkpoint["state_dict"])
    report = report_on_test_users(model, store, data, checkpoint["config"]["credit"]).metrics
    assert {k: report[k] for k in METRIC_KEYS} == {k: metrics[k] for k in METRIC_KEYS}


def test_train_in_a_real_process(prepared: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "training", "train", "--data", str(prepared), "--model",
         "youtube", "--out", str(run), "--epochs", "1", "--device", "cpu"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    check_run(run, "youtube", epochs=1)
    assert f"wrote {run}" in done.stdout


def test_max_batches_bounds_each_epoch_and_is_timed(
    prepared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    args = ["--data", str(prepared), "--model", "youtube", "--out", str(run), "--epochs", "1"]
    assert main(["train", *args, "--max-batches", "3", "--device", "cpu"]) == 0
    config = json.loads((run / "config.json").read_text())["hyperparameters"]
    history = json.loads((run / "history.json").read_text())
    assert config["max_batches"] == 3
    assert history[1]["epoch_samples"] == 3 * config["batch_size"]
    assert history[1]["epoch_seconds"] > 0
    capsys.readouterr()
    assert main(["train", *args, "--max-batches", "0"]) != 0
    assert "--max-batches must be >= 1" in capsys.readouterr().err


def test_train_a_counting_baseline(prepared: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert main(["train", "--data", str(prepared), "--model", "userpop", "--out", str(run)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) >= METRIC_KEYS and json.loads((run / "history.json").read_text()) == []


def test_train_rejects_an_unknown_model(
    prepared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--data", str(prepared), "--model", "nope", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "invalid choice: 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--epochs", "0"], "--epochs must be >= 1"), (["--config", "{missing}"], "missing.json")],
)
def test_train_reports_bad_arguments(
    prepared: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    extra = [e.format(missing=tmp_path / "missing.json") for e in extra]
    run = tmp_path / "run"
    args = ["train", "--data", str(prepared), "--model", "sve", "--out", str(run), *extra]
    assert main(args) == 2
    assert message in capsys.readouterr().err
    assert not (run / CHECKPOINT).exists()


def test_train_names_the_missing_hyper_parameter(
    prepared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({**HANDMADE, "models": {"ctmvm": {"rho": 0.1}}}))
    args = ["--data", str(prepared), "--model", "ctmvm", "--out", str(tmp_path / "run")]
    assert main(["train", *args, "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"{config}: missing hyper-parameter(s) n_views for ctmvm" in err


def test_train_rejects_a_directory_that_is_not_prepared(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--data", str(tmp_path), "--model", "youtube", "--out", str(tmp_path / "run")]
    assert main(["train", *args]) == 2
    assert "dataset.npz is missing" in capsys.readouterr().err
