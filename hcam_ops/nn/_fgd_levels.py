"""Per-level arguments of FGDLoss: a map or a list of maps, a weight given
once or once per level."""

from __future__ import annotations

import math


def _levels(x) -> list:
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _at(x, level: int):
    """One level's entry of a per-level list, or the tensor given for all levels."""
    return x[level] if isinstance(x, (list, tuple)) else x


def _per_level(value, n: int, name: str) -> list[float]:
    """A weight given once or once per level (as DistillBEV's ``w[i] if len(w) > 1 else w[0]``)."""
    values = [float(v) for v in _levels(value)]
    if len(values) == 1:
        values = values * n
    if len(values) != n:
        raise ValueError(f"FGDLoss: {name} has {len(values)} values for {n} levels")
    for v in values:
        if not math.isfinite(v):
            raise ValueError(f"FGDLoss: {name} must be finite, got {v}")
    return values
