"""FGD's global relation block (docs/ops/fgd.md#global-relation-term), a
GCNet context: ``R(F) = F + channel_add(sum_hw softmax_hw(conv_mask(F)) * F)``.
FGDLoss holds two per level (student and teacher, FGD's ``conv_mask_s/_t``
and ``channel_add_conv_s/_t``); the pieces are here so both use one code."""

from __future__ import annotations

import torch
from torch import nn


def channel_add(channels: int, ratio: float = 0.5) -> nn.Sequential:
    """conv1x1 -> LayerNorm -> ReLU -> conv1x1 through ``int(channels * ratio)``
    hidden channels (FGD: ``channels // 2``); the last conv starts at zero, so
    the block starts as the identity (GCNet's and FGD's ``last_zero_init``)."""
    hidden = max(1, int(channels * ratio))
    seq = nn.Sequential(
        nn.Conv2d(channels, hidden, kernel_size=1),
        nn.LayerNorm([hidden, 1, 1]),
        nn.ReLU(inplace=True),
        nn.Conv2d(hidden, channels, kernel_size=1),
    )
    nn.init.zeros_(seq[-1].weight)
    nn.init.zeros_(seq[-1].bias)
    return seq


def init_context_mask(conv: nn.Conv2d) -> None:
    """mmcv's ``kaiming_init(mode='fan_in')``: normal, ReLU gain, bias 0."""
    nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")
    nn.init.zeros_(conv.bias)


def global_context(x: torch.Tensor, conv_mask: nn.Conv2d) -> torch.Tensor:
    """``sum_hw softmax_hw(conv_mask(x)) * x``: ``[B, C, 1, 1]``."""
    B, C, H, W = x.shape
    attn = torch.softmax(conv_mask(x).reshape(B, 1, H * W), dim=-1)
    return torch.bmm(x.reshape(B, C, H * W), attn.transpose(1, 2)).reshape(B, C, 1, 1)


class GcBlock(nn.Module):
    """One global-context block: ``x + channel_add(global_context(x))``."""

    def __init__(self, channels: int, ratio: float = 0.5):
        super().__init__()
        self.conv_mask = nn.Conv2d(channels, 1, kernel_size=1)
        self.channel_add = channel_add(channels, ratio)
        init_context_mask(self.conv_mask)

    def context(self, x: torch.Tensor) -> torch.Tensor:
        return global_context(x, self.conv_mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.channel_add(self.context(x))
