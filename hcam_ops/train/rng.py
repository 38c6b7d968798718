"""Every random state a training process draws from, kept in each epoch's
checkpoint and restored on ``--resume``, so a resumed run continues the
uninterrupted one bit for bit (re-seeding would restart the streams):
Python's ``random``, NumPy's global generator, torch's CPU and CUDA
generators, and the generator of a task's own sampler (a
``WeightedRandomSampler``'s). The per-epoch samplers (``DistributedSampler``,
timm's ``RepeatAugSampler``) derive their order from the seed and the epoch
and keep nothing. The states are plain tensors, ints and floats, so the
checkpoint still loads with ``weights_only=True``."""

from __future__ import annotations

import random

import numpy as np
import torch


def capture(sampler=None) -> dict:
    """This process's random states."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
    }  # fmt: skip
    generator = _generator(sampler)
    if generator is not None:
        state["sampler"] = generator.get_state()
    return state


def restore(state: dict, sampler=None) -> None:
    """The counterpart of :func:`capture`."""
    random.setstate(_tuples(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    generator = _generator(sampler)
    if generator is not None and state.get("sampler") is not None:
        generator.set_state(state["sampler"])


def _generator(sampler) -> torch.Generator | None:
    generator = getattr(sampler, "generator", None)
    return generator if isinstance(generator, torch.Generator) else None


def _tuples(v):
    """``random.setstate`` wants tuples where a checkpoint may give lists."""
    return tuple(_tuples(x) for x in v) if isinstance(v, (list, tuple)) else v
