"""Plain-PyTorch segment_mean: a scatter-add of the pixels into their segments."""

from __future__ import annotations

import torch


def segment_mean(x, segments, num_segments, *, check_segments=True):
    B, H, W, C = x.shape
    seg = segments.reshape(B, H * W).long()
    valid = (seg >= 0) & (seg < num_segments)
    ids = torch.where(valid, seg, torch.zeros_like(seg))
    w = valid.to(x.dtype).unsqueeze(-1)
    sums = x.new_zeros(B, num_segments, C).scatter_add(
        1, ids.unsqueeze(-1).expand(B, H * W, C), x.reshape(B, H * W, C) * w
    )
    counts = torch.zeros(B, num_segments, dtype=torch.int64, device=x.device).scatter_add(1, ids, valid.long())
    mean = sums / counts.clamp_min(1).unsqueeze(-1).to(x.dtype)
    return mean, counts
