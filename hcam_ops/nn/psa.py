"""Polarized Self-Attention, sequential form (Liu et al., 2021).

:class:`SequentialPSA` is the ``PSA_s`` the Plant Pathology 2021 report plugs
into its feature module (the DeLightCMU/PSA code it uses, layer names kept so
the report's weights load): a channel branch whose ``conv_up`` is a
bottleneck (C/2 -> C/8 -> C, LayerNorm, ReLU), then a spatial branch whose
values are softmaxed over positions before the pooled query weights them.
:class:`PolarizedSelfAttention` is the paper's form (channel weights through
``conv -> LayerNorm -> sigmoid``, spatial query softmaxed over channels), our
lighter option.
"""

from __future__ import annotations

import torch
from torch import nn


class SequentialPSA(nn.Module):
    """``x [B, C, H, W] -> x`` reweighted per channel, then per position.

    Channel branch (``spatial_pool`` in the original's naming, as it pools
    over space): ``conv_q_right`` (C -> 1) softmaxed over positions pools
    ``conv_v_right`` (C -> C/2) to ``[B, C/2, 1, 1]``; ``conv_up`` lifts it to
    ``C`` sigmoid weights. Spatial branch (``channel_pool``): the globally
    pooled ``conv_q_left`` (C -> C/2) dotted with ``conv_v_left`` (C -> C/2)
    softmaxed over positions; sigmoid gives per-position weights."""

    def __init__(self, inplanes: int, planes: int | None = None, ratio: int = 4):
        super().__init__()
        planes = inplanes if planes is None else planes
        self.inplanes, self.planes, self.inter_planes = inplanes, planes, planes // 2
        if self.inter_planes // ratio < 1:
            raise ValueError(f"SequentialPSA: {planes} channels are too few for the ratio-{ratio} bottleneck")
        inter = self.inter_planes
        self.conv_q_right = nn.Conv2d(inplanes, 1, 1, bias=False)
        self.conv_v_right = nn.Conv2d(inplanes, inter, 1, bias=False)
        self.conv_up = nn.Sequential(
            nn.Conv2d(inter, inter // ratio, 1),
            nn.LayerNorm([inter // ratio, 1, 1]),
            nn.ReLU(inplace=True),
            nn.Conv2d(inter // ratio, planes, 1),
        )
        self.conv_q_left = nn.Conv2d(inplanes, inter, 1, bias=False)
        self.conv_v_left = nn.Conv2d(inplanes, inter, 1, bias=False)
        for conv in (self.conv_q_right, self.conv_v_right, self.conv_q_left, self.conv_v_left):
            nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")  # the original's init

    def spatial_pool(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        v = self.conv_v_right(x).reshape(B, self.inter_planes, H * W)
        q = torch.softmax(self.conv_q_right(x).reshape(B, 1, H * W), dim=2)
        context = (v @ q.transpose(1, 2)).unsqueeze(-1)  # [B, C/2, 1, 1]
        return x * torch.sigmoid(self.conv_up(context))

    def channel_pool(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        q = self.conv_q_left(x).mean((2, 3)).unsqueeze(1)  # [B, 1, C/2]
        v = torch.softmax(self.conv_v_left(x).reshape(B, self.inter_planes, H * W), dim=2)
        return x * torch.sigmoid((q @ v).reshape(B, 1, H, W))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.channel_pool(self.spatial_pool(x))


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
