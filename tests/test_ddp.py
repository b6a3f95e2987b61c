"""Distributed training for real: ``torchrun --nproc_per_node 2 -m training train`` (two
processes, gloo, DistributedDataParallel) on a tiny synthetic world, and a rank that dies
mid-training failing the whole command without leaving a run directory that looks done."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from training.cli import main
from training.distributed import World, epoch_order, from_env
from training.runs import CHECKPOINT, PER_USER_FILE

from .model_fixtures import quick_config_file

RUN_FILES = {CHECKPOINT, "config.json", "metrics.json", PER_USER_FILE, "history.json",
             "training_curve.png"}  # fmt: skip

KILL_RANK_1 = """
import os, signal
from torch.optim.optimizer import register_optimizer_step_post_hook
from training.cli import main

def die(optimizer, args, kwargs):  # rank 1 dies hard after its first optimiser step
    os.kill(os.getpid(), signal.SIGKILL)

if os.environ["RANK"] == "1":
    register_optimizer_step_post_hook(die)
raise SystemExit(main())
"""
"""The torchrun script of the failure test: ``python -m training``, except that rank 1 is
killed (SIGKILL, no clean-up) once it is inside training, as an OOM kill would be."""


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny prepared synthetic world and the quick CTMVM config file."""
    root = tmp_path_factory.mktemp("ddp")
    world = ["--users", "120", "--items", "60", "--tags", "24"]
    assert main(["prepare", "--dataset", "synthetic", *world, "--out", str(root / "data")]) == 0
    return root / "data", quick_config_file(root)


def torchrun(entry: list[str], args: list[str]) -> subprocess.CompletedProcess[str]:
    """``python -m torch.distributed.run --standalone --nproc_per_node 2 ENTRY train ARGS``
    with this interpreter (``--standalone``: a free local port, so parallel tests do not
    collide)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
            "2", *entry, "train", *args]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120, check=False)


def train_args(prepared: tuple[Path, Path], out: Path) -> list[str]:
    data, config = prepared
    return ["--data", str(data), "--model", "ctmvm", "--out", str(out), "--config", str(config),
            "--epochs", "1", "--device", "cpu"]  # fmt: skip


def test_two_processes_train_and_rank_0_writes_the_run_once(
    prepared: tuple[Path, Path], tmp_path: Path
) -> None:
    run = tmp_path / "run"
    done = torchrun(["-m", "training"], train_args(prepared, run))
    assert done.returncode == 0, done.stderr[-3000:]
    assert {p.name for p in run.iterdir()} == RUN_FILES
    # rank 0 alone reports and writes; the other rank trains quietly
    assert done.stdout.count("wrote ") == 1 and done.stdout.count('"model": "ctmvm"') == 1
    config = json.loads((run / "config.json").read_text())
    assert config["processes"] == 2 and config["hyperparameters"]["epochs"] == 1
    metrics = json.loads((run / "metrics.json").read_text())
    numbers = {k: v for k, v in metrics.items() if isinstance(v, float)}
    assert numbers and all(math.isfinite(v) for v in numbers.values())
    assert 0.0 < metrics["ndcg@10"] <= 1.0 and metrics["test_users"] > 0
    history = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in history] == [0, 1]
    assert math.isfinite(history[1]["loss"]) and math.isfinite(history[1]["valid_ndcg@10"])


def test_a_rank_that_dies_fails_the_command(prepared: tuple[Path, Path], tmp_path: Path) -> None:
    run, script = tmp_path / "run", tmp_path / "kill_rank_1.py"
    script.write_text(KILL_RANK_1, encoding="utf-8")
    done = torchrun([str(script)], train_args(prepared, run))
    assert done.returncode != 0
    # torchrun's report: rank 1 was killed inside training (not an error before it) ...
    assert re.search(r"rank\s*: 1 \(local_rank: 1\)\s*exitcode\s*: -9", done.stderr), done.stderr
    assert not (run / CHECKPOINT).exists() and not (run / "metrics.json").exists()


def test_the_world_comes_from_torchrun_s_environment() -> None:
    assert from_env({}) == World() and not World().distributed
    world = from_env({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"})
    assert world == World(1, 2, 1) and world.distributed and not world.is_main
    assert world.share(16) == 8 and world.share(1) == 1 and World(0, 3, 0).share(16) == 6
    with pytest.raises(ValueError, match="torchrun"):
        from_env({"WORLD_SIZE": "2"})
    with pytest.raises(ValueError, match="outside"):
        from_env({"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})


def test_the_ranks_share_out_each_epoch_and_reshuffle() -> None:
    shares = [epoch_order(11, 1, 0, World(r, 2, r)) for r in (0, 1)]
    assert len(shares[0]) == len(shares[1]) == 6  # padded: both ranks take the same steps
    assert set(shares[0]) | set(shares[1]) == set(range(11))
    assert set(shares[0]) & set(shares[1]) <= {shares[0][0]}  # only the padding repeats
    later = epoch_order(11, 2, 0, World(0, 2, 0))
    assert later.tolist() != shares[0].tolist()
    assert epoch_order(11, 1, 0, World(0, 2, 0)).tolist() == shares[0].tolist()
