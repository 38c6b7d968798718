"""Spatial-transformer front ends (Jaderberg et al., 2015): a small
localisation network predicts an affine warp that is applied to the input
before the backbone.

:class:`STN` is the module of the Plant Pathology 2021 report (section 5.7),
its layer names included, so the report's weights load into it; its linear
layer is sized from the input size instead of the report's hard-coded
``10 * 52 * 52`` (which is right for 224 x 224 only). :class:`PooledSTN` is
our lighter variant (strided convolutions and an adaptive pool: any input
size, a fixed parameter count); ``docs/plant_pathology.md`` has the measured
comparison.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def _to_pair(size) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _start_at_identity(linear: nn.Linear) -> None:
    """A zero last layer with the identity as bias: an untrained STN passes
    images through unchanged (up to resampling), so adding it to a model does
    not disturb its start."""
    nn.init.zeros_(linear.weight)
    with torch.no_grad():
        linear.bias.copy_(torch.tensor(IDENTITY))


def _warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    # align_corners=False is what the report's calls get by default (and the
    # only setting that keeps the identity an exact resampling).
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False)


class STN(nn.Module):
    """The report's STN: ``localization`` = conv7(3 -> 8), maxpool 2, ReLU,
    conv5(8 -> 10), maxpool 2, ReLU; ``fc_loc`` = Linear(10 * h * w, 32),
    ReLU, Linear(32, 6), identity init. ``h, w`` follow ``img_size``:
    ``((H - 6) // 2 - 4) // 2``, 52 for the report's 224."""

    def __init__(self, img_size: int | tuple[int, int] = 224, in_chans: int = 3):
        super().__init__()
        self.img_size = _to_pair(img_size)
        self.loc_size = tuple(((s - 6) // 2 - 4) // 2 for s in self.img_size)
        if min(self.loc_size) < 1:
            raise ValueError(f"STN: input size {self.img_size} is too small for the localisation net (needs >= 16)")
        self.localization = nn.Sequential(
            nn.Conv2d(in_chans, 8, kernel_size=7),
            nn.MaxPool2d(2, stride=2),
            nn.ReLU(True),
            nn.Conv2d(8, 10, kernel_size=5),
            nn.MaxPool2d(2, stride=2),
            nn.ReLU(True),
        )
        h, w = self.loc_size
        self.fc_loc = nn.Sequential(nn.Linear(10 * h * w, 32), nn.ReLU(True), nn.Linear(32, 6))
        _start_at_identity(self.fc_loc[2])

    def theta(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.img_size:
            # The flattened size fixes the input size; say so rather than let
            # the linear layer fail on a shape mismatch.
            raise ValueError(f"STN: built for {self.img_size} inputs, got {tuple(x.shape[-2:])}")
        return self.fc_loc(self.localization(x).flatten(1)).view(-1, 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _warp(x, self.theta(x))


class PooledSTN(nn.Module):
    """Our variant: two strided convolutions, an adaptive average pool to
    ``pool x pool`` and a two-layer regressor (identity init). Works at any
    input size with a parameter count independent of it."""

    def __init__(self, in_chans: int = 3, hidden: int = 32, pool: int = 8):
        super().__init__()
        self.loc = nn.Sequential(
            nn.Conv2d(in_chans, hidden, 7, stride=2, padding=3),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 5, stride=2, padding=2),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(pool),
            nn.Flatten(),
            nn.Linear(hidden * pool * pool, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, 6),
        )
        _start_at_identity(self.loc[-1])

    def theta(self, x: torch.Tensor) -> torch.Tensor:
        return self.loc(x).view(-1, 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _warp(x, self.theta(x))


def make_stn(kind: str | bool | None, img_size, in_chans: int = 3) -> nn.Module | None:
    """``"report"`` (or ``True``): :class:`STN`; ``"pooled"``: :class:`PooledSTN`;
    ``None`` / ``False`` / ``"none"``: no STN."""
    if kind in (None, False, "none"):
        return None
    if kind in (True, "report"):
        return STN(img_size, in_chans)
    if kind == "pooled":
        return PooledSTN(in_chans)
    raise ValueError(f"stn must be 'report', 'pooled' or None, got {kind!r}")
