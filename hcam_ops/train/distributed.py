"""Data parallelism over processes with ``torch.distributed``, launched by
``torchrun`` (one process per GPU, or several CPU processes on gloo).

A plain ``python -m hcam_ops.train ...`` is a world of one: every helper here
then does nothing, so the engine has a single code path.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    local_rank: int = 0
    size: int = 1
    backend: str | None = None

    @property
    def main(self) -> bool:
        """The process that logs, plots and writes checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def launched_by_torchrun() -> bool:
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def init(device: torch.device) -> tuple[World, torch.device]:
    """Joins the process group torchrun describes (NCCL for CUDA, gloo for
    the CPU) and picks this process's GPU: ``cuda`` becomes ``cuda:LOCAL_RANK``.
    Outside torchrun: a world of one on ``device``."""
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        return World(), device
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank if device.index is None else device.index)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, device_id=device if backend == "nccl" else None)
    return World(dist.get_rank(), local_rank, dist.get_world_size(), backend), device


def shutdown(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def seed_everything(seed: int, world: World) -> None:
    """One seed per rank (so augmentations and dropout differ across ranks);
    the model's initial weights still agree, since DDP broadcasts rank 0's."""
    s = seed + world.rank
    random.seed(s)
    np.random.seed(s % 2**32)
    torch.manual_seed(s)


def sum_across(values: dict[str, float], world: World, device: torch.device) -> dict[str, float]:
    """Each value summed over the ranks (float64 on the wire: counts stay exact)."""
    if not world.distributed or not values:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return dict(zip(keys, t.tolist()))


def gather_rows(t: torch.Tensor, world: World) -> torch.Tensor:
    """Concatenates every rank's ``[n_r, ...]`` rows (n_r may differ), rank
    0's first; every rank gets the whole."""
    if not world.distributed:
        return t
    n = torch.tensor([t.shape[0]], device=t.device)
    sizes = [torch.zeros_like(n) for _ in range(world.size)]
    dist.all_gather(sizes, n)
    sizes = [int(s) for s in sizes]
    padded = t.new_zeros((max(sizes), *t.shape[1:]))
    padded[: t.shape[0]] = t
    parts = [torch.empty_like(padded) for _ in range(world.size)]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([p[:s] for p, s in zip(parts, sizes)])


class ShardSampler(torch.utils.data.Sampler):
    """Evaluation shards: rank ``r`` takes items ``r, r + W, r + 2W, ...``.
    Unlike ``DistributedSampler`` it never pads with repeated items, so
    metrics summed over the ranks count each item exactly once."""

    def __init__(self, length: int, world: World):
        self.indices = range(world.rank, length, world.size)

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
