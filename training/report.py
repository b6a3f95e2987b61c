"""Benchmark reporting: aggregate per-seed metrics, render markdown, draw the @10 bar chart.

Everything here is a pure function of plain dicts (what ``results.json`` holds), so the
report can be re-rendered from a saved ``results.json`` and tested on hand-made numbers
without training anything.

``results`` layout (written by ``python -m training benchmark``)::

    {"command": str, "timestamp": str, "data": str | [str], "dataset": {meta.json},
     "splits": [int], "seeds": [int], "models": [str], "device": str,
     "epochs": int | None, "complete": bool, "hyperparameters": {model: {...}},
     "results": {model: {"seeds": [run label], "runs": {run label: run_dir},
                         "metrics": {key: {"mean": float, "std": float,
                                           "values": [float]}}}},
     "paired": [{"a": model, "b": model,
                 key: {"a", "b", "delta", "ci_low", "ci_high", "p_value", "pairs"}}]}

A run label is the seed with one split, ``split<s>/seed<k>`` with several.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tabulate import tabulate

from training.metrics import KS, METRICS

SHORT = {"precision": "P", "recall": "R", "hr": "HR", "ndcg": "NDCG"}
AT10 = tuple(f"{m}@10" for m in METRICS)
TARGET = "ctmvm"
ABLATION_CHAIN = ("youtube", "sve", "sve_pkm", "ctmvm")
ABLATION_STEP = {
    "youtube": "main MLP on X_u, X_t",
    "sve": "+ SVE sample weights",
    "sve_pkm": "+ PKM (one privileged view)",
    "ctmvm": "+ AMVM (N privileged views)",
}
ABLATION_METRICS = ("ndcg@10", "precision@10")
PAIRED_METRICS = ("ndcg@10", "novel_ndcg@10", "repeat_ndcg@10")
"""Paired per-user tests: the whole ranking, tags new to the user, tags the user repeats."""
DISCOVERY_KEYS = tuple(f"{view}{m}@10" for view in ("novel_", "repeat_") for m in METRICS)
COMPONENT_CHECKS = (("sve", "youtube"), (TARGET, "sve"))
"""Each component must help: SVE over the plain network, AMVM (with SVE) over SVE."""
GOAL_MEAN_IMPROVEMENT = 0.15
GOAL_BASELINE = "youtube_plain"
"""The paper's comparison: CTMVM against its YouTube DNN (no target-aware signal)."""
NOT_BELOW_MARGIN = 0.002
"""``ctmvm`` is "not below" a model when Δ ≥ 0, or Δ > −0.002 with p > 0.05."""
ALPHA = 0.05
SYMLOG_LINEAR = 0.01
EXTRA_METRICS = {"avg_shapley@10": "AvgShapley@10", "tag_privileged_hr@10": "Tag_Privileged_HR@10"}
DIGITS = 4

PerSeed = Mapping[int, Mapping[str, Any]]


# ----------------------------------------------------------------------- aggregation
def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample std (ddof=1); std is 0 for a single value, where it is undefined."""
    n = len(values)
    if n == 0:
        raise ValueError("mean_std needs at least one value")
    mean = math.fsum(values) / n
    if n < 2:
        return mean, 0.0
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))


def aggregate(per_seed: PerSeed) -> dict[str, Any]:
    """One model's per-seed metric dicts -> ``{"seeds", "metrics": {key: mean/std/values}}``.

    Only numeric metrics present in every seed are aggregated, so a key that a run did not
    report never gets a mean over fewer seeds than the table claims.
    """
    seeds = sorted(per_seed)
    if not seeds:
        raise ValueError("aggregate needs at least one seed")
    common = set.intersection(*(set(per_seed[s]) for s in seeds))
    metrics: dict[str, dict[str, Any]] = {}
    for key in sorted(common):
        values = [per_seed[s][key] for s in seeds]
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            continue
        values = [float(v) for v in values]
        mean, std = mean_std(values)
        metrics[key] = {"mean": mean, "std": std, "values": values}
    return {"seeds": seeds, "metrics": metrics}


def metric_mean(results: Mapping[str, Any], model: str, key: str) -> float | None:
    entry = results["results"].get(model, {}).get("metrics", {}).get(key)
    return None if entry is None else entry["mean"]


def relative_improvement(target: float, other: float) -> float | None:
    """(target − other) / other; None when ``other`` is 0 (no meaningful ratio)."""
    return None if other == 0 else (target - other) / other


def improvements(
    results: Mapping[str, Any], target: str = TARGET, keys: Sequence[str] = AT10
) -> dict[str, dict[str, float | None]]:
    """Relative improvement of ``target`` over every other model per key, plus ``mean``
    (over the keys where the ratio is defined; None if none is)."""
    out: dict[str, dict[str, float | None]] = {}
    for model in results["models"]:
        if model == target or model not in results["results"]:
            continue
        row: dict[str, float | None] = {}
        for key in keys:
            t, m = metric_mean(results, target, key), metric_mean(results, model, key)
            row[key] = None if t is None or m is None else relative_improvement(t, m)
        defined = [v for v in row.values() if v is not None]
        row["mean"] = math.fsum(defined) / len(defined) if defined else None
        out[model] = row
    return out


def verdict(deltas: Sequence[float]) -> str:
    """Helps when every metric improves, hurts when every one drops, else mixed."""
    if all(d == 0 for d in deltas):
        return "no change"
    if all(d > 0 for d in deltas):
        return "helps"
    if all(d < 0 for d in deltas):
        return "hurts"
    return "mixed"


def within_noise(deltas: Sequence[float], stds: Sequence[tuple[float, float]]) -> bool:
    """True when every |Δ| ≤ √(std_before² + std_after²): the seeds cannot tell the two
    apart. Never true without a std estimate (one seed: all stds are 0)."""
    if all(a == 0 and b == 0 for a, b in stds):
        return False
    return all(abs(d) <= math.hypot(a, b) for d, (a, b) in zip(deltas, stds, strict=True))


def ablation(
    results: Mapping[str, Any],
    chain: Sequence[str] = ABLATION_CHAIN,
    keys: Sequence[str] = ABLATION_METRICS,
) -> list[dict[str, Any]]:
    """Steps between consecutive models of ``chain`` that were run (a missing model is
    skipped, so a step may add several components); each with deltas and the verdict."""
    present = [m for m in chain if m in results["results"]]
    steps = []
    for before, after in itertools.pairwise(present):
        deltas, stds = [], []
        for key in keys:
            a = results["results"][before]["metrics"][key]
            b = results["results"][after]["metrics"][key]
            deltas.append(b["mean"] - a["mean"])
            stds.append((a["std"], b["std"]))
        steps.append(
            {
                "from": before,
                "to": after,
                "delta": dict(zip(keys, deltas, strict=True)),
                "verdict": verdict(deltas),
                "within_noise": within_noise(deltas, stds),
            }
        )
    return steps


# -------------------------------------------------------------------------- markdown
def fmt_mean_std(entry: Mapping[str, float] | None, digits: int = DIGITS) -> str:
    if entry is None:
        return "n/a"
    return f"{entry['mean']:.{digits}f} ± {entry['std']:.{digits}f}"


def fmt_percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:+.1f}%"


def fmt_delta(delta: float, before: float) -> str:
    relative = relative_improvement(before + delta, before)
    return f"{delta:+.{DIGITS}f} ({fmt_percent(relative)})"


def label(key: str) -> str:
    """``ndcg@10`` -> ``NDCG@10``."""
    name, _, k = key.partition("@")
    return f"{SHORT.get(name, name)}@{k}"


def best_models(results: Mapping[str, Any], key: str, digits: int = DIGITS) -> set[str]:
    """Models whose mean of ``key`` is the highest as displayed (ties all win)."""
    shown = {
        m: round(v, digits)
        for m in results["models"]
        if (v := metric_mean(results, m, key)) is not None
    }
    if not shown:
        return set()
    top = max(shown.values())
    return {m for m, v in shown.items() if v == top}


def _table(
    header: Sequence[str], rows: Sequence[Sequence[str]], text: Sequence[int] = (0,)
) -> list[str]:
    """A markdown table (tabulate's pipe format): the ``text`` columns left-aligned, the
    others (numbers) right; cells are already formatted strings."""
    left = {i % len(header) for i in text}
    align = ["left" if i in left else "right" for i in range(len(header))]
    table = tabulate(
        [list(row) for row in rows], headers=list(header), tablefmt="pipe",
        colalign=align, disable_numparse=True,
    )  # fmt: skip
    return table.splitlines()


def metric_rows(results: Mapping[str, Any], keys: Sequence[str]) -> list[list[str]]:
    """One row per model that ran: its name, then mean ± std of each key, the best in bold."""
    best = {key: best_models(results, key) for key in keys}
    rows = []
    for model in results["models"]:
        if model not in results["results"]:
            continue
        metrics = results["results"][model]["metrics"]
        cells = [f"`{model}`"]
        for key in keys:
            text = fmt_mean_std(metrics.get(key))
            cells.append(f"**{text}**" if model in best[key] else text)
        rows.append(cells)
    return rows


def main_table(results: Mapping[str, Any]) -> list[str]:
    """One row per model, P/R/HR/NDCG @5,@10,@20 as mean ± std, the best mean in bold."""
    keys = [f"{m}@{k}" for m in METRICS for k in KS]
    rows = metric_rows(results, keys)
    for row in rows:
        metrics = results["results"][row[0].strip("`")]["metrics"]
        row.append(fmt_mean_std(metrics.get("train_seconds"), digits=2))
    return _table(["model", *map(label, keys), "train s"], rows)


def discovery_section(results: Mapping[str, Any]) -> list[str]:
    """Novel and repeat views of the @10 metrics (``training.metrics``), best in bold."""
    keys = [k for k in DISCOVERY_KEYS
            if any(k in r["metrics"] for r in results["results"].values())]  # fmt: skip
    if not keys:
        return []
    rows = metric_rows(results, keys)
    header = ["model", *(f"{k.split('_')[0]} {label(k.split('_', 1)[1])}" for k in keys)]
    return [
        "## Discovery: tags new to the user (novel) and tags the user repeats (repeat)",
        "",
        "novel: the user's history tags removed from the ranking and the truth (users "
        "without a novel held-out tag skipped); repeat: the whole ranking against the "
        "held-out tags the user had used before.",
        "",
        *_table(header, rows),
    ]


def improvement_section(results: Mapping[str, Any]) -> list[str]:
    lines = [f"## Relative improvement of {TARGET} over each model", ""]
    if TARGET not in results["results"]:
        return [*lines, f"_{TARGET} was not run: no improvement table._"]
    table = improvements(results)
    if not table:
        return [*lines, f"_only {TARGET} was run: nothing to compare with._"]
    lines += [f"(({TARGET} − model) / model on the mean over runs; n/a where model is 0)", ""]
    rows = [
        [f"`{m}`", *(fmt_percent(row[k]) for k in AT10), fmt_percent(row["mean"])]
        for m, row in table.items()
    ]
    return lines + _table(["vs model", *map(label, AT10), "mean of the four"], rows)


def step_label(before: str, after: str, chain: Sequence[str] = ABLATION_CHAIN) -> str:
    """What ``after`` adds to ``before``: every chain component between them (a model that
    was not run merges its component into the next step)."""
    added = chain[chain.index(before) + 1 : chain.index(after) + 1]
    return " ".join(ABLATION_STEP[m] for m in added)


def ablation_section(results: Mapping[str, Any]) -> list[str]:
    lines = ["## Ablation: " + " → ".join(ABLATION_CHAIN), ""]
    present = [m for m in ABLATION_CHAIN if m in results["results"]]
    if len(present) < 2:
        ran = ", ".join(present) or "none"
        return [*lines, f"_needs at least two of {', '.join(ABLATION_CHAIN)}; ran: {ran}._"]
    missing = [m for m in ABLATION_CHAIN if m not in present]
    if missing:
        skipped = ", ".join(missing)
        lines += [f"_not run: {skipped}; a skipped component counts in the next step run._", ""]
    steps = {s["to"]: s for s in ablation(results)}
    n_runs = len(results.get("seeds", [])) * len(results.get("splits", [0]))
    header = ["model", "step"]
    for key in ABLATION_METRICS:
        header += [label(key), f"Δ {label(key)}"]
    header.append("verdict")
    rows = []
    for model in present:
        metrics = results["results"][model]["metrics"]
        step = steps.get(model)
        row = [f"`{model}`", step_label(step["from"], model) if step else ABLATION_STEP[model]]
        for key in ABLATION_METRICS:
            row.append(fmt_mean_std(metrics[key]))
            if step is None:
                row.append("")
            else:
                before = results["results"][step["from"]]["metrics"][key]["mean"]
                row.append(fmt_delta(step["delta"][key], before))
        if step is None:
            row.append("baseline")
        else:
            noise = " (within run-to-run noise)" if step["within_noise"] else ""
            row.append(f"{step['verdict']}{noise}")
        rows.append(row)
    lines += _table(header, rows, text=(0, 1, -1))
    noise_rule = (
        "a step is *within run-to-run noise* when every |Δ| ≤ √(std_before² + std_after²)"
        if n_runs >= 2
        else "one run: no noise estimate"
    )
    lines += [
        "",
        f"Verdict on NDCG@10 and P@10: helps = both rise, hurts = both fall, else mixed; "
        f"{noise_rule}.",
    ]
    return lines


def extra_section(results: Mapping[str, Any]) -> list[str]:
    """AvgShapley@10 / Tag_Privileged_HR@10 (paper appendix A) for models that report them."""
    keys = [k for k in EXTRA_METRICS if any(k in r["metrics"] for r in results["results"].values())]
    if not keys:
        return []
    rows = [
        [f"`{m}`", *(fmt_mean_std(results["results"][m]["metrics"].get(k)) for k in keys)]
        for m in results["models"]
        if m in results["results"]
    ]
    return [
        "## Tag quality (paper appendix A)",
        "",
        *_table(["model", *(EXTRA_METRICS[k] for k in keys)], rows),
    ]


def find_paired(results: Mapping[str, Any], a: str, b: str) -> Mapping[str, Any] | None:
    return next((p for p in results.get("paired", []) if p["a"] == a and p["b"] == b), None)


def fmt_paired(entry: Mapping[str, Any]) -> list[str]:
    """``+0.0123 [+0.0010, +0.0236]`` and the p-value."""
    low, high = (f"{entry[k]:+.{DIGITS}f}" for k in ("ci_low", "ci_high"))
    return [f"{entry['delta']:+.{DIGITS}f} [{low}, {high}]", f"{entry['p_value']:.2g}"]


def paired_section(results: Mapping[str, Any]) -> list[str]:
    """Model a minus model b, user by user on the same test users (``significance``)."""
    pairs = results.get("paired", [])
    if not pairs:
        return []
    header = ["a − b"]
    for key in PAIRED_METRICS:
        header += [f"Δ {label(key)} [95% CI]", "p"]
    header.append("users")
    rows = []
    for pair in pairs:
        row = [f"`{pair['a']}` − `{pair['b']}`"]
        for key in PAIRED_METRICS:
            row += fmt_paired(pair[key]) if pair.get(key) else ["n/a", ""]
        row.append(str(pair.get(PAIRED_METRICS[0], {}).get("pairs", "")))
        rows.append(row)
    return [
        "## Paired comparison on the same test users",
        "",
        "Per split, each test user's metric averaged over the training seeds; the per-user "
        "differences of all splits pooled; paired t-test (two-sided). This separates models "
        "that the ± over runs (which includes the split) cannot. Novel and repeat: over the "
        "users those views are defined for (users column: all users with a held-out tag).",
        "",
        *_table(header, rows),
    ]


def _paired_evidence(entry: Mapping[str, Any]) -> str:
    return (f"Δ {entry['delta']:+.4f} [{entry['ci_low']:+.4f}, {entry['ci_high']:+.4f}], "
            f"p = {entry['p_value']:.2g}")  # fmt: skip


def not_below(results: Mapping[str, Any], a: str, b: str, key: str) -> tuple[str, str]:
    """a is not below b on ``key``: Δ ≥ 0, or Δ > −0.002 with p > 0.05 (paired)."""
    pair = find_paired(results, a, b)
    entry = pair.get(key) if pair else None
    if entry is None:
        return "n/a", "no paired test"
    holds = entry["delta"] >= 0 or (entry["delta"] > -NOT_BELOW_MARGIN and entry["p_value"] > ALPHA)
    return ("yes" if holds else "no"), _paired_evidence(entry)


def significantly_above(results: Mapping[str, Any], a: str, b: str, key: str) -> tuple[str, str]:
    """a is above b on ``key`` with p < 0.05 (paired)."""
    pair = find_paired(results, a, b)
    entry = pair.get(key) if pair else None
    if entry is None:
        return "n/a", "no paired test"
    holds = entry["delta"] > 0 and entry["p_value"] < ALPHA
    return ("yes" if holds else "no"), _paired_evidence(entry)


def checks(results: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """The bar CTMVM is held to (issue 11): (check, yes/no/n/a, evidence) for the models
    that ran."""
    ran = set(results["results"])
    out: list[tuple[str, str, str]] = []
    if TARGET not in ran:
        return out
    if "userpop" in ran:
        out.append(
            (
                f"`{TARGET}` not below `userpop` on NDCG@10 (Δ ≥ 0, or Δ > −0.002 with p > 0.05)",
                *not_below(results, TARGET, "userpop", "ndcg@10"),
            )
        )
    discovery = [m for m in ("mostpop", "cooccur") if m in ran]
    if discovery:
        best = max(discovery, key=lambda m: metric_mean(results, m, "novel_ndcg@10") or 0.0)
        out.append(
            (
                f"`{TARGET}` significantly above the better of "
                f"{' and '.join(f'`{m}`' for m in discovery)} (`{best}`) on novel NDCG@10",
                *significantly_above(results, TARGET, best, "novel_ndcg@10"),
            )
        )
    for after, before in COMPONENT_CHECKS:
        if after in ran and before in ran:
            check = f"`{after}` above `{before}` on NDCG@10 (p < 0.05)"
            out.append((check, *significantly_above(results, after, before, "ndcg@10")))
    for baseline in (GOAL_BASELINE, "youtube"):
        gain = improvements(results).get(baseline, {}).get("mean") if baseline in ran else None
        if gain is not None:
            goal = f"{GOAL_MEAN_IMPROVEMENT:.0%}"
            out.append((
                f"mean relative gain of `{TARGET}` over `{baseline}` (P/R/HR/NDCG@10) ≥ {goal}",
                "yes" if gain >= GOAL_MEAN_IMPROVEMENT - 1e-9 else "no",  # float ratios
                fmt_percent(gain),
            ))  # fmt: skip
    return out


def checks_section(results: Mapping[str, Any]) -> list[str]:
    rows = [[check, outcome, evidence] for check, outcome, evidence in checks(results)]
    if not rows:
        return []
    return ["## Checks", "", *_table(["check", "met", "evidence"], rows, text=(0, 1, 2))]


def render_markdown(results: Mapping[str, Any]) -> str:
    """The whole ``results.md``: header, main table, checks, improvement, ablation, paired
    comparisons, tag quality."""
    meta = results.get("dataset", {})
    name = meta.get("dataset", "?")
    seeds = results.get("seeds", [])
    splits = results.get("splits", [])
    data = results.get("data", "?")
    data = ", ".join(f"`{d}`" for d in data) if isinstance(data, list) else f"`{data}`"
    runs = f"seeds: {', '.join(map(str, seeds))} (mean ± sample std over seeds)"
    if len(splits) > 1:
        runs = (
            f"user splits (`prepare --seed`): {', '.join(map(str, splits))} × training seeds: "
            f"{', '.join(map(str, seeds))} (mean ± sample std over the "
            f"{len(splits) * len(seeds)} runs)"
        )
    test_users = {
        int(n)
        for r in results["results"].values()
        if "test_users" in r["metrics"]
        for n in r["metrics"]["test_users"]["values"]
    }
    lines = [
        f"# Benchmark on {name}",
        "",
        f"- data: {data} (data set `{name}`, family `{meta.get('family', '?')}`)",
        f"- {runs}",
        f"- test users per run: {', '.join(map(str, sorted(test_users))) or '?'}",
        f"- epochs: {results.get('epochs') or 'from the config'}; "
        f"device: {results.get('device', '?')}",
        f"- command: `{results.get('command', '?')}`",
        f"- timestamp: {results.get('timestamp', '?')}",
    ]
    if not results.get("complete", True):
        lines.append("- **incomplete**: the benchmark has not finished every run")
    lines += [
        "",
        "## Test metrics",
        "",
        *main_table(results),
        "",
        "Best mean per column in bold; `train s` is training wall time in seconds.",
    ]
    for section in (
        checks_section(results),
        discovery_section(results),
        improvement_section(results),
        ablation_section(results),
        paired_section(results),
        extra_section(results),
    ):
        if section:
            lines += ["", *section]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- plot
def plot_results(results: Mapping[str, Any], path: Path) -> None:
    """Grouped bars of the @10 metrics (mean ± std over runs, one bar per model) and, when
    paired comparisons exist, a panel of their differences with 95% CIs: the picture that
    says whether a gap is real."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = [m for m in results["models"] if m in results["results"]]
    pairs = results.get("paired", [])
    n = max(len(models), 1)
    width = 0.8 / n
    bars_width = max(9.0, 0.9 * n + 5)
    fig, axes = plt.subplots(
        1, 2 if pairs else 1, figsize=(bars_width + (6.5 if pairs else 0), 4.8), dpi=120,
        squeeze=False, gridspec_kw={"width_ratios": [bars_width, 6.5] if pairs else [1]},
    )  # fmt: skip
    ax = axes[0][0]
    cmap = plt.get_cmap("tab10")
    for i, model in enumerate(models):
        metrics = results["results"][model]["metrics"]
        means = [metrics[k]["mean"] if k in metrics else 0.0 for k in AT10]
        stds = [metrics[k]["std"] if k in metrics else 0.0 for k in AT10]
        xs = [j + (i - (n - 1) / 2) * width for j in range(len(AT10))]
        ax.bar(
            xs, means, width, yerr=stds, capsize=3, label=model, color=cmap(i % 10),
            edgecolor="black", linewidth=0.4,
        )  # fmt: skip
    ax.set_xticks(range(len(AT10)), [label(k) for k in AT10], fontsize=11)
    ax.set_ylabel("test score (mean over runs)")
    ax.set_ylim(0, min(1.05, max(ax.get_ylim()[1], 0.05)))
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    name = results.get("dataset", {}).get("dataset", "?")
    n_runs = len(results.get("seeds", [])) * len(results.get("splits", [0]))
    ax.set_title(f"{name}: test metrics @10, mean ± std over {n_runs} run(s)")
    ax.legend(title="model", fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    if pairs:
        _plot_paired(axes[0][1], pairs)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _plot_paired(ax: Any, pairs: Sequence[Mapping[str, Any]]) -> None:
    """One row per comparison, a point with its 95% CI per paired metric, a line at 0."""
    offsets = {
        key: (i - (len(PAIRED_METRICS) - 1) / 2) * 0.25 for i, key in enumerate(PAIRED_METRICS)
    }
    for i, key in enumerate(PAIRED_METRICS):
        shown = [(row, p[key]) for row, p in enumerate(pairs) if p.get(key)]
        if not shown:
            continue
        ys = [row + offsets[key] for row, _ in shown]
        deltas = [e["delta"] for _, e in shown]
        errors = [
            [e["delta"] - e["ci_low"] for _, e in shown],
            [e["ci_high"] - e["delta"] for _, e in shown],
        ]
        ax.errorbar(deltas, ys, xerr=errors, fmt="o", capsize=3, label=label(key), color=f"C{i}")
    ax.axvline(0.0, color="black", linewidth=0.8)
    # linear near 0, where the close calls are; logarithmic for gaps like ctmvm − mostpop
    ax.set_xscale("symlog", linthresh=SYMLOG_LINEAR)
    ax.margins(x=0.08)
    ax.set_yticks(range(len(pairs)), [f"{p['a']} − {p['b']}" for p in pairs], fontsize=9)
    ax.invert_yaxis()
    ax.set_xlabel(f"paired difference, same test users (95% CI; linear within ±{SYMLOG_LINEAR})")
    ax.set_title("is the gap real? (CI crossing 0: no)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=9, loc="lower right")
