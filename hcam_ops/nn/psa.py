"""Polarized Self-Attention, sequential form PSA_s (Liu et al., 2021): a
channel-only branch, then a spatial-only branch on its output."""

from __future__ import annotations

import torch
from torch import nn


class PolarizedSelfAttention(nn.Module):
    """``x [B, C, H, W] -> x`` reweighted by channel, then by position.

    Channel branch: a query ``conv1x1(C -> 1)`` softmaxed over positions pools
    the values ``conv1x1(C -> C/2)`` to ``[B, C/2]``, lifted back by
    ``conv1x1 -> LayerNorm -> sigmoid`` to per-channel weights. Spatial
    branch: a globally pooled query ``conv1x1(C -> C/2)`` softmaxed over
    channels, dotted with the values ``conv1x1(C -> C/2)`` at every position,
    sigmoid: per-position weights."""

    def __init__(self, channels: int):
        super().__init__()
        half = max(channels // 2, 1)
        self.ch_v, self.ch_q = nn.Conv2d(channels, half, 1), nn.Conv2d(channels, 1, 1)
        self.ch_z = nn.Conv2d(half, channels, 1)
        self.ch_norm = nn.LayerNorm(channels)
        self.sp_q, self.sp_v = nn.Conv2d(channels, half, 1), nn.Conv2d(channels, half, 1)

    def channel(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        q = torch.softmax(self.ch_q(x).reshape(B, 1, H * W), dim=-1)  # [B, 1, HW]
        v = self.ch_v(x).reshape(B, -1, H * W)  # [B, C/2, HW]
        z = (v @ q.transpose(1, 2)).unsqueeze(-1)  # [B, C/2, 1, 1]
        w = torch.sigmoid(self.ch_norm(self.ch_z(z).reshape(B, C))).reshape(B, C, 1, 1)
        return x * w

    def spatial(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        q = torch.softmax(self.sp_q(x).mean((2, 3)), dim=-1).unsqueeze(1)  # [B, 1, C/2]
        v = self.sp_v(x).reshape(B, -1, H * W)  # [B, C/2, HW]
        w = torch.sigmoid(q @ v).reshape(B, 1, H, W)
        return x * w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial(self.channel(x))
