"""``benchmark``: aggregation and report on hand-made numbers, then one real CLI smoke run."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest

from training.cli import main
from training.commands.benchmark import parse_models, parse_seeds
from training.model_names import MODELS
from training.report import (
    ablation,
    aggregate,
    best_models,
    checks,
    improvements,
    mean_std,
    plot_results,
    render_markdown,
    verdict,
    within_noise,
)

from .model_fixtures import quick_config_file

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_results(per_model: dict[str, dict[str, list[float]]]) -> dict[str, Any]:
    """results.json-shaped dict from ``{model: {metric: [value per seed]}}``."""
    n_seeds = len(next(iter(next(iter(per_model.values())).values())))
    seeds = list(range(n_seeds))
    summary = {
        model: aggregate({s: {k: v[s] for k, v in metrics.items()} for s in seeds})
        for model, metrics in per_model.items()
    }
    return {
        "command": "python -m training benchmark ...",
        "timestamp": "2026-01-01T00:00:00+00:00",
        "data": "prepared",
        "dataset": {"dataset": "handmade", "family": "synthetic"},
        "seeds": seeds,
        "models": list(per_model),
        "device": "cpu",
        "epochs": 1,
        "complete": True,
        "results": summary,
    }


def at10(p: list[float], r: list[float], hr: list[float], ndcg: list[float]) -> dict:
    return {"precision@10": p, "recall@10": r, "hr@10": hr, "ndcg@10": ndcg}


def section(md: str, heading: str) -> str:
    """The markdown from ``heading`` to the next ``## `` heading."""
    start = md.index(heading)
    end = md.find("\n## ", start + len(heading))
    return md[start : end if end >= 0 else None]


def squash(markdown: str) -> str:
    """Markdown with the alignment padding of its tables collapsed to one space."""
    return re.sub(r" {2,}", " ", markdown)


def model_rows(text: str) -> dict[str, str]:
    """Table rows by their first cell (the model name in backticks)."""
    return {line.split(" | ")[0][2:]: line for line in text.splitlines() if line.startswith("| `")}


# ------------------------------------------------------------------------ aggregation
def test_mean_std_is_the_sample_std():
    mean, std = mean_std([0.1, 0.2, 0.4])
    assert mean == pytest.approx(0.7 / 3)
    # deviations -0.1333, -0.0333, +0.1667: squares sum to 0.046667, / (n - 1) = 0.023333
    assert std == pytest.approx(math.sqrt(0.14 / 6))
    assert mean_std([0.25]) == (0.25, 0.0)
    with pytest.raises(ValueError):
        mean_std([])


def test_aggregate_orders_by_seed_and_keeps_common_numeric_metrics():
    per_seed = {
        2: {"ndcg@10": 0.4, "train_seconds": 3.0, "only_here": 1.0, "name": "x"},
        0: {"ndcg@10": 0.2, "train_seconds": 1.0, "name": "x"},
    }
    out = aggregate(per_seed)
    assert out["seeds"] == [0, 2]
    assert set(out["metrics"]) == {"ndcg@10", "train_seconds"}  # not partial, not text
    ndcg = out["metrics"]["ndcg@10"]
    assert ndcg["values"] == [0.2, 0.4]
    assert ndcg["mean"] == pytest.approx(0.3)
    assert ndcg["std"] == pytest.approx(0.2 / math.sqrt(2))  # two values: |a - b| / √2
    single = aggregate({5: {"hr@10": 0.7}})
    assert single["metrics"]["hr@10"] == {"mean": 0.7, "std": 0.0, "values": [0.7]}


def test_improvements_are_relative_to_the_other_model():
    results = make_results(
        {
            "youtube": at10([0.2, 0.2], [0.5, 0.5], [0.0, 0.0], [0.1, 0.3]),
            "ctmvm": at10([0.3, 0.3], [0.4, 0.4], [0.6, 0.6], [0.3, 0.3]),
        }
    )
    row = improvements(results)["youtube"]
    assert row["precision@10"] == pytest.approx(0.5)  # (0.3 - 0.2) / 0.2
    assert row["recall@10"] == pytest.approx(-0.2)  # (0.4 - 0.5) / 0.5
    assert row["hr@10"] is None  # youtube's HR is 0: no ratio
    assert row["ndcg@10"] == pytest.approx(0.5)  # mean 0.2 -> 0.3
    assert row["mean"] == pytest.approx((0.5 - 0.2 + 0.5) / 3)
    assert "ctmvm" not in improvements(results)


def test_verdicts_and_noise():
    assert verdict([0.01, 0.02]) == "helps"
    assert verdict([-0.01, -0.02]) == "hurts"
    assert verdict([0.01, -0.02]) == "mixed"
    assert verdict([0.01, 0.0]) == "mixed"
    assert verdict([0.0, 0.0]) == "no change"
    assert within_noise([0.01, -0.01], [(0.03, 0.04), (0.01, 0.0)])  # 0.05 and 0.01 bounds
    assert not within_noise([0.06, 0.0], [(0.03, 0.04), (0.01, 0.0)])
    assert not within_noise([0.001], [(0.0, 0.0)])  # one seed: no estimate, no claim


def test_ablation_walks_the_chain_and_skips_models_not_run():
    results = make_results(
        {
            "mostpop": at10([0.1] * 2, [0.1] * 2, [0.1] * 2, [0.1] * 2),
            "youtube": at10([0.20, 0.22], [0.1] * 2, [0.1] * 2, [0.30, 0.32]),
            "sve_pkm": at10([0.25, 0.27], [0.1] * 2, [0.1] * 2, [0.29, 0.31]),
            "ctmvm": at10([0.20, 0.20], [0.1] * 2, [0.1] * 2, [0.20, 0.20]),
        }
    )
    steps = ablation(results)
    assert [(s["from"], s["to"]) for s in steps] == [("youtube", "sve_pkm"), ("sve_pkm", "ctmvm")]
    first, second = steps
    assert first["delta"]["precision@10"] == pytest.approx(0.05)
    assert first["delta"]["ndcg@10"] == pytest.approx(-0.01)
    assert first["verdict"] == "mixed"
    # noise bound per metric √(0.0141² + 0.0141²) = 0.02: NDCG's -0.01 is inside, P's 0.05 not
    assert not first["within_noise"]
    assert second["verdict"] == "hurts"
    assert not second["within_noise"]


# ------------------------------------------------------------------------- markdown
def test_markdown_bolds_the_best_mean_per_column_and_shows_mean_std():
    results = make_results(
        {
            "mostpop": {
                **at10([0.10, 0.10], [0.5, 0.5], [0.9, 0.9], [0.2, 0.2]),
                "train_seconds": [0.0, 0.0],
            },
            "ctmvm": {
                **at10([0.30, 0.32], [0.5, 0.5], [0.8, 0.8], [0.4, 0.2]),
                "train_seconds": [10.0, 12.0],
            },
        }
    )
    assert best_models(results, "precision@10") == {"ctmvm"}
    assert best_models(results, "recall@10") == {"mostpop", "ctmvm"}  # a tie: both win
    md = squash(render_markdown(results))
    rows = model_rows(section(md, "## Test metrics"))
    ctmvm, mostpop = rows["`ctmvm`"], rows["`mostpop`"]
    assert "**0.3100 ± 0.0141**" in ctmvm  # P@10: mean 0.31, std 0.02 / √2
    assert "| 0.1000 ± 0.0000 |" in mostpop
    assert "**0.9000 ± 0.0000**" in mostpop and "| 0.8000 ± 0.0000 |" in ctmvm  # HR@10
    assert mostpop.count("**0.5000 ± 0.0000**") == 1 and "**0.5000 ± 0.0000**" in ctmvm
    assert "11.00 ± 1.41" in ctmvm  # train seconds, never bolded
    assert "**0.00" not in mostpop
    assert "# Benchmark on handmade" in md
    assert "| model | P@5 | P@10 | P@20 | R@5 |" in md


def test_markdown_improvement_and_ablation_sections():
    results = make_results(
        {
            "youtube": at10([0.20, 0.20], [0.4, 0.4], [0.5, 0.5], [0.20, 0.20]),
            "sve": at10([0.22, 0.22], [0.4, 0.4], [0.5, 0.5], [0.25, 0.25]),
            "ctmvm": at10([0.30, 0.30], [0.44, 0.44], [0.6, 0.6], [0.24, 0.24]),
        }
    )
    md = squash(render_markdown(results))
    # ctmvm over youtube: P +50%, R +10%, HR +20%, NDCG +20% -> mean +25%
    assert "| `youtube` | +50.0% | +10.0% | +20.0% | +20.0% | +25.0% |" in md
    # ctmvm over sve: P 0.30/0.22 - 1 = +36.4%, NDCG 0.24/0.25 - 1 = -4.0%; mean +15.6%
    assert "| `sve` | +36.4% | +10.0% | +20.0% | -4.0% | +15.6% |" in md
    assert "## Ablation: youtube → sve → sve_pkm → ctmvm" in md
    assert "not run: sve_pkm" in md
    sve_row = next(line for line in md.splitlines() if line.startswith("| `sve` | + SVE"))
    assert "+0.0500 (+25.0%)" in sve_row and "+0.0200 (+10.0%)" in sve_row
    assert sve_row.endswith("| helps |")  # one std of 0: noise cannot be claimed
    ctmvm_row = next(line for line in md.splitlines() if line.startswith("| `ctmvm` | + PKM"))
    assert "+ PKM (one privileged view) + AMVM" in ctmvm_row  # sve_pkm's step merged in
    assert ctmvm_row.endswith("| mixed |")  # NDCG -0.01, P +0.08
    assert "AvgShapley@10" not in md  # no such metric here: no section


def paired_entry(delta: float, p_value: float) -> dict[str, float]:
    return {"delta": delta, "ci_low": delta - 0.01, "ci_high": delta + 0.01,
            "p_value": p_value, "pairs": 9}  # fmt: skip


def test_checks_hold_ctmvm_to_the_bar_with_the_paired_evidence():
    novel = {"novel_ndcg@10": [0.05]}
    results = make_results(
        {
            "mostpop": {**at10([0.10], [0.3], [0.5], [0.10]), "novel_ndcg@10": [0.02]},
            "userpop": {**at10([0.21], [0.4], [0.5], [0.26]), "novel_ndcg@10": [0.02]},
            "cooccur": {**at10([0.18], [0.4], [0.5], [0.20]), "novel_ndcg@10": [0.04]},
            "youtube_plain": {**at10([0.20], [0.4], [0.5], [0.20]), **novel},
            "youtube": {**at10([0.20], [0.4], [0.5], [0.20]), **novel},
            "sve": {**at10([0.19], [0.4], [0.5], [0.25]), **novel},
            "ctmvm": {**at10([0.22], [0.44], [0.6], [0.259]), **novel},
        }
    )
    results["paired"] = [
        {"a": "ctmvm", "b": "userpop", "ndcg@10": paired_entry(-0.001, 0.4)},
        {"a": "ctmvm", "b": "cooccur", "novel_ndcg@10": paired_entry(0.01, 0.03)},
        {"a": "sve", "b": "youtube", "ndcg@10": paired_entry(0.05, 0.2)},
        {"a": "ctmvm", "b": "sve", "ndcg@10": paired_entry(0.009, 0.01)},
    ]
    rows = {row[0]: row[1:] for row in checks(results)}
    # −0.001 with p = 0.4 is within the margin: not below
    not_below = rows["`ctmvm` not below `userpop` on NDCG@10 (Δ ≥ 0, or Δ > −0.002 with "
                     "p > 0.05)"]  # fmt: skip
    assert not_below == ("yes", "Δ -0.0010 [-0.0110, +0.0090], p = 0.4")
    # cooccur is the better of mostpop and cooccur on novel tags, and ctmvm beats it
    discovery = rows["`ctmvm` significantly above the better of `mostpop` and `cooccur` "
                     "(`cooccur`) on novel NDCG@10"]  # fmt: skip
    assert discovery[0] == "yes"
    assert rows["`sve` above `youtube` on NDCG@10 (p < 0.05)"][0] == "no"  # p = 0.2
    assert rows["`ctmvm` above `sve` on NDCG@10 (p < 0.05)"][0] == "yes"
    # over youtube_plain: P +10%, R +10%, HR +20%, NDCG +29.5% -> +17.4%
    goal = rows["mean relative gain of `ctmvm` over `youtube_plain` (P/R/HR/NDCG@10) ≥ 15%"]
    assert goal == ("yes", "+17.4%")
    md = squash(render_markdown(results))
    assert "## Checks" in md and "| `ctmvm` − `userpop` | -0.0010 [-0.0110, +0.0090] |" in md


def test_not_below_fails_outside_the_margin_or_when_significant():
    results = make_results({"userpop": at10([0.2], [0.2], [0.2], [0.2]),
                            "ctmvm": at10([0.2], [0.2], [0.2], [0.2])})  # fmt: skip
    for delta, p_value, expected in ((-0.003, 0.5, "no"), (-0.001, 0.01, "no"),
                                     (0.0, 1.0, "yes"), (0.01, 0.001, "yes")):  # fmt: skip
        results["paired"] = [{"a": "ctmvm", "b": "userpop",
                              "ndcg@10": paired_entry(delta, p_value)}]  # fmt: skip
        rows = {row[0]: row[1] for row in checks(results)}
        assert next(v for k, v in rows.items() if "not below" in k) == expected


def test_discovery_table_shows_novel_and_repeat_views():
    results = make_results(
        {
            "userpop": {**at10([0.2], [0.2], [0.2], [0.2]), "novel_ndcg@10": [0.01],
                        "repeat_ndcg@10": [0.7]},
            "ctmvm": {**at10([0.2], [0.2], [0.2], [0.2]), "novel_ndcg@10": [0.05],
                      "repeat_ndcg@10": [0.7]},
        }
    )  # fmt: skip
    text = section(squash(render_markdown(results)), "## Discovery")
    rows = model_rows(text)
    assert "**0.0500 ± 0.0000**" in rows["`ctmvm`"]
    assert "**0.7000 ± 0.0000**" in rows["`userpop`"]
    assert "novel NDCG@10" in text and "repeat NDCG@10" in text


def test_markdown_without_ctmvm_says_why_there_is_no_improvement_table():
    results = make_results(
        {
            "mostpop": {**at10([0.1], [0.1], [0.1], [0.1]), "avg_shapley@10": [0.07]},
            "youtube": at10([0.2], [0.2], [0.2], [0.2]),
        }
    )
    md = squash(render_markdown(results))
    assert "_ctmvm was not run: no improvement table._" in md
    assert "_needs at least two of youtube, sve, sve_pkm, ctmvm; ran: youtube._" in md
    assert "| `mostpop` | 0.0700 ± 0.0000 |" in md  # tag quality, where reported
    assert "| `youtube` | n/a |" in md


def test_plot_is_a_png(tmp_path: Path):
    results = make_results(
        {
            "youtube": at10([0.2, 0.3], [0.4, 0.4], [0.5, 0.6], [0.2, 0.2]),
            "ctmvm": at10([0.3, 0.3], [0.5, 0.5], [0.6, 0.6], [0.24, 0.26]),
        }
    )
    plot_results(results, tmp_path / "r.png")
    data = (tmp_path / "r.png").read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000


# --------------------------------------------------------------------- argument parsing
def test_parse_models_and_seeds():
    assert parse_models(" ctmvm, mostpop") == ["ctmvm", "mostpop"]
    assert parse_seeds("0, 1,2") == [0, 1, 2]
    with pytest.raises(ValueError, match=r"unknown model\(s\) 'nope'.*valid models: mostpop"):
        parse_models("mostpop,nope")
    with pytest.raises(ValueError, match="duplicate entries youtube"):
        parse_models("youtube,ctmvm,youtube")
    with pytest.raises(ValueError, match="empty entries"):
        parse_models("youtube,,ctmvm")
    with pytest.raises(ValueError, match=r"seeds must be integers, got '1\.5'"):
        parse_seeds("0,1.5")
    with pytest.raises(ValueError, match="non-negative"):
        parse_seeds("-1")
    with pytest.raises(ValueError, match="duplicate seeds"):
        parse_seeds("1,01")


# ------------------------------------------------------------------------ CLI smoke run
SMOKE_MODELS = ("mostpop", "userpop", "youtube", "ctmvm")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("data")
    argv = ["prepare", "--dataset", "synthetic", "--users", "200", "--items", "80"]
    assert main([*argv, "--tags", "30", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def quick_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return quick_config_file(tmp_path_factory.mktemp("config"))


@pytest.fixture(scope="module")
def bench(prepared: Path, quick_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    argv = ["benchmark", "--data", str(prepared), "--models", ",".join(SMOKE_MODELS)]
    argv += ["--seeds", "0,1", "--epochs", "1", "--device", "cpu", "--out", str(out)]
    assert main([*argv, "--config", str(quick_config)]) == 0
    return out


def test_smoke_writes_every_run_and_results_json(bench: Path, prepared: Path):
    for model in SMOKE_MODELS:
        for seed in (0, 1):
            assert (bench / "runs" / model / f"seed{seed}" / "metrics.json").is_file()
    results = json.loads((bench / "results.json").read_text())
    assert results["models"] == list(SMOKE_MODELS)
    assert results["seeds"] == [0, 1]
    assert results["complete"] is True
    assert results["dataset"]["dataset"] == "synthetic"
    assert results["timestamp"] and "--models mostpop,userpop,youtube,ctmvm" in results["command"]
    for model in SMOKE_MODELS:
        metrics = results["results"][model]["metrics"]
        for key in ("precision@5", "recall@10", "hr@20", "ndcg@10", "train_seconds"):
            entry = metrics[key]
            assert len(entry["values"]) == 2
            assert entry["mean"] == pytest.approx(sum(entry["values"]) / 2)
            assert entry["std"] == pytest.approx(
                abs(entry["values"][0] - entry["values"][1]) / 2**0.5
            )
        per_run = json.loads((bench / "runs" / model / "seed1" / "metrics.json").read_text())
        assert metrics["ndcg@10"]["values"][1] == pytest.approx(per_run["ndcg@10"])
    # counting models do not depend on the seed
    assert results["results"]["mostpop"]["metrics"]["ndcg@10"]["std"] == 0.0


def test_smoke_markdown_and_png(bench: Path):
    md = squash((bench / "results.md").read_text())
    assert "# Benchmark on synthetic" in md
    assert "| model | P@5 | P@10 | P@20 |" in md and "NDCG@20 | train s |" in md
    for model in SMOKE_MODELS:
        assert f"| `{model}` |" in md
    assert "## Relative improvement of ctmvm over each model" in md
    assert "| `youtube` | " in md.split("Relative improvement")[1]
    assert "not run: sve, sve_pkm" in md
    assert "| `ctmvm` | + SVE sample weights + PKM (one privileged view) + AMVM" in md
    assert "**" in md and " ± " in md
    png = (bench / "results.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 10_000


@pytest.mark.parametrize(
    ("models", "seeds", "message"),
    [
        ("mostpop,bogus", "0", "unknown model(s) 'bogus'"),
        ("mostpop", "0,x", "seeds must be integers, got 'x'"),
        ("mostpop,mostpop", "0", "duplicate entries mostpop"),
    ],
)
def test_bad_input_exits_2_naming_the_problem(
    prepared: Path, tmp_path: Path, capsys: pytest.CaptureFixture, models, seeds, message
):
    out = tmp_path / "never"
    argv = ["benchmark", "--data", str(prepared), "--models", models, "--seeds", seeds]
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err
    if "unknown" in message:
        assert f"valid models: {', '.join(MODELS)}" in err
    assert not out.exists()  # nothing trained before the check


def test_a_failed_run_leaves_a_report_of_the_finished_ones(
    prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
):
    calls: list[tuple[str, int]] = []

    def fake_run_training(data, data_dir, model, config, *, seed, device, out, progress):
        calls.append((model, seed))
        if model == "ctmvm":
            raise ValueError("ctmvm diverged")
        out.mkdir(parents=True)
        return {"precision@10": 0.1 + seed, "ndcg@10": 0.4, "train_seconds": 1.0, "test_users": 40}

    monkeypatch.setattr("training.pipeline.run_training", fake_run_training)
    out = tmp_path / "bench"
    argv = ["benchmark", "--data", str(prepared), "--models", "youtube,ctmvm", "--seeds", "0,1"]
    assert main([*argv, "--out", str(out)]) == 2
    assert "ctmvm diverged" in capsys.readouterr().err
    assert calls == [("youtube", 0), ("youtube", 1), ("ctmvm", 0)]
    results = json.loads((out / "results.json").read_text())
    assert results["complete"] is False and list(results["results"]) == ["youtube"]
    assert results["results"]["youtube"]["metrics"]["precision@10"]["values"] == [0.1, 1.1]
    md = squash((out / "results.md").read_text())
    assert "**incomplete**" in md and "_ctmvm was not run: no improvement table._" in md
    assert (out / "results.png").read_bytes().startswith(PNG_MAGIC)


def test_resume_reuses_finished_runs_and_reruns_the_rest(
    bench: Path, prepared: Path, quick_config: Path, tmp_path: Path, monkeypatch, capsys
):
    """``--resume`` takes a run whose directory finished with the same config; a run without
    its checkpoint (interrupted) or trained with other hyper-parameters is trained again."""
    import shutil

    from training import pipeline

    out = tmp_path / "bench"
    shutil.copytree(bench, out)
    (out / "runs" / "youtube" / "seed1" / "checkpoint.pt").unlink()  # as if killed mid-write
    calls: list[tuple[str, int]] = []
    real = pipeline.run_training

    def counted(*args, **kwargs):
        calls.append((args[2], kwargs["seed"]))
        return real(*args, **kwargs)

    monkeypatch.setattr("training.pipeline.run_training", counted)
    argv = ["benchmark", "--data", str(prepared), "--models", ",".join(SMOKE_MODELS)]
    argv += ["--seeds", "0,1", "--epochs", "1", "--device", "cpu", "--out", str(out)]
    argv += ["--config", str(quick_config)]
    assert main([*argv, "--resume"]) == 0
    assert calls == [("youtube", 1)]
    assert capsys.readouterr().out.count("(reused)") == 2 * len(SMOKE_MODELS) - 1
    before = json.loads((bench / "results.json").read_text())["results"]
    after = json.loads((out / "results.json").read_text())["results"]
    assert after["ctmvm"]["metrics"]["ndcg@10"] == before["ctmvm"]["metrics"]["ndcg@10"]
    calls.clear()
    argv[argv.index("--epochs") + 1] = "2"  # another config: nothing is reused
    assert main([*argv, "--models", "mostpop,youtube", "--seeds", "0", "--resume"]) == 0
    assert calls == [("mostpop", 0), ("youtube", 0)]


# -------------------------------------------------------- several user splits, pooled
SPLIT_MODELS = ("userpop", "youtube", "ctmvm")


@pytest.fixture(scope="module")
def prepared_split1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("data-split1")
    argv = ["prepare", "--dataset", "synthetic", "--users", "200", "--items", "80"]
    assert main([*argv, "--tags", "30", "--seed", "1", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def bench_splits(
    prepared: Path, prepared_split1: Path, quick_config: Path, tmp_path_factory
) -> Path:
    out = tmp_path_factory.mktemp("bench-splits")
    argv = ["benchmark", "--data", str(prepared), str(prepared_split1)]
    argv += ["--models", ",".join(SPLIT_MODELS), "--seeds", "0", "--epochs", "1"]
    argv += ["--config", str(quick_config)]
    assert main([*argv, "--device", "cpu", "--out", str(out)]) == 0
    return out


def test_several_splits_are_pooled_run_by_run(bench_splits: Path, prepared: Path):
    results = json.loads((bench_splits / "results.json").read_text())
    assert results["splits"] == [0, 1] and results["seeds"] == [0]
    assert len(results["data"]) == 2 and results["data"][0] == str(prepared)
    for model in SPLIT_MODELS:
        entry = results["results"][model]
        assert entry["seeds"] == ["split0/seed0", "split1/seed0"]
        for label in entry["seeds"]:
            run_dir = bench_splits / "runs" / model / label
            assert entry["runs"][label] == str(run_dir)
            per_user = json.loads((run_dir / "test_per_user.json").read_text())
            metrics = json.loads((run_dir / "metrics.json").read_text())
            assert len(per_user["users"]) == metrics["test_users"]
            assert sum(per_user["ndcg@10"]) / len(per_user["users"]) == pytest.approx(
                metrics["ndcg@10"]
            )
        assert len(entry["metrics"]["ndcg@10"]["values"]) == 2


def test_paired_comparisons_pool_the_users_of_every_split(bench_splits: Path):
    results = json.loads((bench_splits / "results.json").read_text())
    pairs = {(p["a"], p["b"]): p for p in results["paired"]}
    assert set(pairs) == {("ctmvm", "userpop"), ("ctmvm", "youtube")}
    metrics = results["results"]["ctmvm"]["metrics"]
    for model in ("userpop", "youtube"):
        for key, counted in (("ndcg@10", "test_users"), ("novel_ndcg@10", "novel_test_users")):
            users = metrics[counted]["values"]  # novel: only users with a novel held-out tag
            pair = pairs[("ctmvm", model)][key]
            assert pair["pairs"] == sum(users)
            assert pair["delta"] == pytest.approx(pair["a"] - pair["b"])
            assert pair["ci_low"] <= pair["delta"] <= pair["ci_high"]
            assert 0.0 <= pair["p_value"] <= 1.0
            # the pooled per-user mean is the user-weighted mean of the run means
            runs = results["results"][model]["metrics"][key]["values"]
            assert pair["b"] == pytest.approx(
                sum(n * v for n, v in zip(users, runs, strict=True)) / sum(users)
            )
    md = squash((bench_splits / "results.md").read_text())
    assert "user splits (`prepare --seed`): 0, 1 × training seeds: 0" in md
    paired_md = section(md, "## Paired comparison on the same test users")
    assert "| `ctmvm` − `youtube` |" in paired_md
    checks_md = section(md, "## Checks")
    assert "`ctmvm` not below `userpop` on NDCG@10" in checks_md
    png = (bench_splits / "results.png").read_bytes()  # bars and the paired-CI panel
    assert png.startswith(PNG_MAGIC) and len(png) > 10_000
    assert "mean relative gain of `ctmvm` over `youtube` (P/R/HR/NDCG@10) ≥ 15%" in checks_md
    assert "(p < 0.05)" not in checks_md  # no sve ran: no component check


@pytest.mark.parametrize("case", ["same split twice", "another data set"])
def test_splits_of_different_data_sets_are_refused(
    case: str, prepared: Path, tmp_path: Path, capsys: pytest.CaptureFixture
):
    other = prepared
    message = "split 0 is already"
    if case == "another data set":
        other = tmp_path / "other"
        argv = ["prepare", "--dataset", "synthetic", "--users", "200", "--items", "80"]
        assert main([*argv, "--tags", "20", "--seed", "3", "--out", str(other)]) == 0
        message = "not a split of the same data set"
    out = tmp_path / "never"
    argv = ["benchmark", "--data", str(prepared), str(other), "--models", "mostpop"]
    assert main([*argv, "--seeds", "0", "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()
