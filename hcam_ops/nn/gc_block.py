"""The global relation block of FGD (docs/ops/fgd.md#global-relation-term), a GcBlock context:
R(F) = F + channel_add(sum_hw softmax_hw(conv1x1(F)) * F)."""

from __future__ import annotations

import torch
from torch import nn


class GcBlock(nn.Module):
    """Global-context block. ``channel_add`` is conv1x1 -> LayerNorm -> ReLU ->
    conv1x1 through ``channels * ratio`` hidden channels; its last conv starts
    at zero, so the block starts as the identity (as in GCNet and FGD)."""

    def __init__(self, channels: int, ratio: float = 0.5):
        super().__init__()
        hidden = max(1, int(channels * ratio))
        self.conv_mask = nn.Conv2d(channels, 1, kernel_size=1)
        self.channel_add = nn.Sequential(
            nn.Conv2d(channels, hidden, kernel_size=1),
            nn.LayerNorm([hidden, 1, 1]),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, kernel_size=1),
        )
        nn.init.kaiming_normal_(self.conv_mask.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(self.conv_mask.bias)
        nn.init.zeros_(self.channel_add[-1].weight)
        nn.init.zeros_(self.channel_add[-1].bias)

    def context(self, x: torch.Tensor) -> torch.Tensor:
        """``sum_hw softmax_hw(conv1x1(x)) * x``: ``[B, C, 1, 1]``."""
        B, C, H, W = x.shape
        attn = torch.softmax(self.conv_mask(x).reshape(B, 1, H * W), dim=-1)
        return torch.bmm(x.reshape(B, C, H * W), attn.transpose(1, 2)).reshape(B, C, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.channel_add(self.context(x))
