"""A spatial-transformer front end (Jaderberg et al., 2015): a small
localisation network predicts an affine warp that is applied to the input
before the backbone."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class STN(nn.Module):
    """``x [B, C, H, W] -> x`` warped by a predicted affine transform. The
    last layer starts at the identity transform, so an untrained STN passes
    images through unchanged (up to resampling)."""

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
        nn.init.zeros_(self.loc[-1].weight)
        with torch.no_grad():
            self.loc[-1].bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]))

    def theta(self, x: torch.Tensor) -> torch.Tensor:
        return self.loc(x).view(-1, 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grid = F.affine_grid(self.theta(x), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, align_corners=False)
