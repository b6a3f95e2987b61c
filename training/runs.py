"""What a training run leaves behind: checkpoint, config, metrics, history and a plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch and matplotlib load in the functions that need them: the CLI's
    from torch import nn  # --help and the benchmark report stay quick

    from training.data.processed import ProcessedDataset
    from training.trainer import FeatureStore

CHECKPOINT = "checkpoint.pt"
PER_USER_FILE = "test_per_user.json"
"""@10 metrics of each test user (dense user ids of the prepared data set): the input of
the paired comparisons in ``training.significance``."""


def write_json(path: Path, payload: Any) -> None:
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def save_checkpoint(
    run_dir: Path, model_name: str, model: nn.Module, config: dict, extra: dict
) -> None:
    """Everything export needs to rebuild the model without the training code's state."""
    import torch

    torch.save(
        {"model": model_name, "config": config, "state_dict": model.state_dict(), **extra},
        run_dir / CHECKPOINT,
    )


def load_run(
    run_dir: Path, data_dir: Path | None
) -> tuple[dict, ProcessedDataset, nn.Module, FeatureStore]:
    """The checkpoint, its prepared data set, the rebuilt model (eval mode, CPU) and the
    users' feature tensors (built once: the model's sizes come from them too)."""
    import torch

    from training.data.processed import ProcessedDataset
    from training.model_names import LEARNED
    from training.models import build_model
    from training.trainer import FeatureStore, counting_model, dims_of

    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: is {run_dir} a `training train` run?")
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    data_dir = Path(data_dir or checkpoint["data_dir"])
    if not data_dir.is_dir():
        raise FileNotFoundError(
            f"{data_dir}: the prepared data set {run_dir} was trained on is not there; "
            "pass --data DIR"
        )
    data = ProcessedDataset.load(data_dir)
    config, name = checkpoint["config"], checkpoint["model"]
    store = FeatureStore(data, config["max_history"], torch.device("cpu"))
    if name in LEARNED:
        model = build_model(name, dims_of(data, store), config)
    else:
        model = counting_model(data, name)
    model.load_state_dict(checkpoint["state_dict"])
    return checkpoint, data, model.eval(), store


def plot_training_curve(history: list[dict], best_epoch: int, path: Path, title: str) -> None:
    """Loss and validation NDCG@10 (all tags and novel tags) per epoch, the selected epoch
    marked; epoch 0 is the untrained model (no loss yet)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, loss_ax = plt.subplots(figsize=(7, 4), dpi=110)
    trained = [h for h in history if "loss" in h]
    loss_ax.plot(
        [h["epoch"] for h in trained], [h["loss"] for h in trained], "o-", color="tab:blue",
        label="train loss",
    )  # fmt: skip
    loss_ax.set_xlabel("epoch")
    loss_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    loss_ax.set_ylabel("training loss", color="tab:blue")
    ndcg_ax = loss_ax.twinx()
    epochs = [h["epoch"] for h in history]
    ndcg_ax.plot(
        epochs, [h["valid_ndcg@10"] for h in history], "s-", color="tab:orange",
        label="validation NDCG@10",
    )  # fmt: skip
    if all("valid_novel_ndcg@10" in h for h in history):
        ndcg_ax.plot(
            epochs, [h["valid_novel_ndcg@10"] for h in history], "^--", color="tab:green",
            label="validation novel NDCG@10",
        )  # fmt: skip
    ndcg_ax.set_ylabel("validation NDCG@10", color="tab:orange")
    ndcg_ax.legend(loc="lower right", fontsize="small")
    if best_epoch is not None:
        ndcg_ax.axvline(best_epoch, color="grey", linestyle="--", linewidth=1)
        ndcg_ax.annotate("selected", (best_epoch, ndcg_ax.get_ylim()[1]), ha="center", va="top")
    loss_ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
