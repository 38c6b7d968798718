"""Data parallelism over processes with ``torch.distributed``, launched by
``torchrun`` (one process per GPU, or several CPU processes on gloo).

A plain ``python -m hcam_ops.train ...`` is a world of one: every helper here
then does nothing, so the engine has a single code path.
"""

from __future__ import annotations

import datetime
import os
import random
import threading
import time
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


def init(device: torch.device, timeout_s: float | None = None) -> tuple[World, torch.device]:
    """Joins the process group torchrun describes (NCCL for CUDA, gloo for
    the CPU) and picks this process's GPU: ``cuda`` becomes ``cuda:LOCAL_RANK``.
    A collective that waits longer than ``timeout_s`` for a rank fails
    (torch's default is 30 minutes of silence). Outside torchrun: a world of
    one on ``device``."""
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
        timeout = datetime.timedelta(seconds=timeout_s) if timeout_s else None
        dist.init_process_group(backend, timeout=timeout, device_id=device if backend == "nccl" else None)
    world = World(dist.get_rank(), local_rank, dist.get_world_size(), backend)
    _Heartbeat.start(world, timeout_s or 300.0)
    return world, device


def shutdown(world: World) -> None:
    _Heartbeat.stop()
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


class _Heartbeat:
    """Each rank bumps a counter in the rendezvous store a few times per
    timeout from a background thread; after a collective timed out, the
    ranks whose counter stands still are the ones that stopped answering
    (stopped by a signal, hung in native code, gone)."""

    interval = 1.0
    _thread: threading.Thread | None = None
    _stop = threading.Event()

    @classmethod
    def start(cls, world: World, timeout_s: float) -> None:
        cls.interval = min(max(timeout_s / 10, 0.2), 5.0)
        cls._stop = threading.Event()
        store, key, stop = _store(), _beat_key(world.rank), cls._stop

        def beat():
            while not stop.wait(cls.interval):
                try:
                    store.add(key, 1)
                except Exception:  # noqa: BLE001  (the store went away: the job is ending)
                    return

        cls._thread = threading.Thread(target=beat, name="hcam_ops-heartbeat", daemon=True)
        cls._thread.start()

    @classmethod
    def stop(cls) -> None:
        cls._stop.set()


def _store():
    return dist.distributed_c10d._get_default_store()


def _beat_key(rank: int) -> str:
    return f"hcam_ops/heartbeat/{rank}"


def silent_ranks(world: World) -> list[int] | None:
    """The other ranks whose heartbeat stood still over three beats; None
    when the store itself does not answer (the rank that serves it stopped)."""
    try:
        store = _store()
        others = [r for r in range(world.size) if r != world.rank]
        before = [store.add(_beat_key(r), 0) for r in others]
        time.sleep(3 * _Heartbeat.interval)
        after = [store.add(_beat_key(r), 0) for r in others]
    except Exception:  # noqa: BLE001
        return None
    return [r for r, a, b in zip(others, before, after) if a == b]


def timed_out(error: BaseException) -> bool:
    """Whether ``error`` is a collective that waited past the timeout."""
    text = str(error).lower()
    return "timed out" in text or "timeout" in text


def timeout_message(world: World, timeout_s: float) -> str:
    silent = silent_ranks(world)
    head = f"rank {world.rank}: a collective waited longer than --dist-timeout {timeout_s:g} s"
    if silent is None:
        return f"{head}; the rendezvous store does not answer either (its host, usually rank 0, stopped)"
    if silent:
        names = ", ".join(str(r) for r in silent)
        return f"{head}: rank {names} stopped answering (no heartbeat)"
    return f"{head}; every rank is alive, so one is slower than the timeout or waits elsewhere (raise --dist-timeout)"


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


def any_across(flag: bool, world: World, device: torch.device) -> bool:
    """Whether ``flag`` holds on any rank; every rank gets the same answer
    (so all of them skip or stop together, never one alone into a deadlock)."""
    if not world.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def gather_objects(obj, world: World) -> list:
    """Every rank's ``obj`` (picklable), in rank order, on every rank."""
    if not world.distributed:
        return [obj]
    out = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


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
