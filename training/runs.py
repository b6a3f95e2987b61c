"""What a training run leaves behind: checkpoint, config, metrics, history and a plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from matplotlib.ticker import MaxNLocator
from torch import nn

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
    torch.save(
        {"model": model_name, "config": config, "state_dict": model.state_dict(), **extra},
        run_dir / CHECKPOINT,
    )


def plot_training_curve(history: list[dict], best_epoch: int, path: Path, title: str) -> None:
    """Loss and validation NDCG@10 per epoch, the selected epoch marked."""
    fig, loss_ax = plt.subplots(figsize=(7, 4), dpi=110)
    epochs = [h["epoch"] for h in history]
    loss_ax.plot(epochs, [h["loss"] for h in history], "o-", color="tab:blue", label="train loss")
    loss_ax.set_xlabel("epoch")
    loss_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    loss_ax.set_ylabel("training loss", color="tab:blue")
    ndcg_ax = loss_ax.twinx()
    ndcg_ax.plot(
        epochs, [h["valid_ndcg@10"] for h in history], "s-", color="tab:orange",
        label="validation NDCG@10",
    )  # fmt: skip
    ndcg_ax.set_ylabel("validation NDCG@10", color="tab:orange")
    if best_epoch:
        ndcg_ax.axvline(best_epoch, color="grey", linestyle="--", linewidth=1)
        ndcg_ax.annotate("selected", (best_epoch, ndcg_ax.get_ylim()[1]), ha="center", va="top")
    loss_ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
