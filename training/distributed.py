"""Data-parallel training under ``torchrun``: who this process is, and torch.distributed.

``torchrun --nproc_per_node N -m training train ...`` starts N processes with ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` set; each trains on its shard of the train users and
DistributedDataParallel averages the gradients. A plain ``python -m training train`` (or
torchrun with one process) sees ``World()``, the single process, and never touches
torch.distributed. Only the collectives the trainer needs live here; the sharding and the
gradient exchange are torch's own (``DistributedSampler``, ``DistributedDataParallel``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (one process: rank 0 of 1)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes the run directory and shows progress."""
        return self.rank == 0

    def share(self, total: int) -> int:
        """This rank's part of a per-step size (a batch, a number of rows) so that the
        ranks together take ``total`` per step, as one process would."""
        return max(1, math.ceil(total / self.size))


def from_env(env: dict[str, str] | None = None) -> World:
    """The world torchrun describes in the environment; ``World()`` without torchrun."""
    env = dict(os.environ if env is None else env)
    if "WORLD_SIZE" not in env:
        return World()
    missing = [key for key in ENV_KEYS if key not in env]
    if missing:
        raise ValueError(
            f"WORLD_SIZE is set but {', '.join(missing)} is not: start distributed training "
            "with `torchrun --nproc_per_node N -m training train ...`"
        )
    world = World(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env["LOCAL_RANK"]))
    if not 0 <= world.rank < world.size:
        raise ValueError(f"RANK {world.rank} is outside WORLD_SIZE {world.size}")
    return world


@contextmanager
def process_group(world: World, cuda: bool) -> Iterator[None]:
    """The torch.distributed process group for the run (NCCL on CUDA, gloo on CPU), torn
    down afterwards; nothing for a single process."""
    if not world.distributed:
        yield
        return
    import torch
    import torch.distributed as dist

    if cuda:
        torch.cuda.set_device(world.local_rank)  # "cuda" now means this rank's GPU
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()


def epoch_order(n: int, epoch: int, seed: int, world: World) -> np.ndarray:
    """This rank's shuffled share of positions 0..n-1 for ``epoch``: torch's
    ``DistributedSampler`` (one permutation per epoch, seeded alike on every rank, dealt out
    rank by rank and padded so every rank takes the same number of steps)."""
    from torch.utils.data import DistributedSampler

    sampler = DistributedSampler(
        range(n), num_replicas=world.size, rank=world.rank, shuffle=True, seed=seed
    )
    sampler.set_epoch(epoch)
    return np.fromiter(iter(sampler), dtype=np.int64)


def gather(value: Any, world: World) -> list[Any]:
    """``value`` of every rank, in rank order (any picklable object)."""
    if not world.distributed:
        return [value]
    import torch.distributed as dist

    values: list[Any] = [None] * world.size
    dist.all_gather_object(values, value)
    return values
