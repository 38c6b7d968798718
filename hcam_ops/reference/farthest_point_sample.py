"""Plain-PyTorch farthest point sampling, batched over samples, one pick at a
time, with the fused op's rules (distances in the accumulation dtype, ties to
the lower index: torch.argmax returns the first maximum)."""

from __future__ import annotations

import torch


def farthest_point_sample(points, k, start=0, mask=None):
    B, N, C = points.shape
    acc = torch.float64 if points.dtype == torch.float64 else torch.float32
    p = points.detach().to(acc)
    valid = mask if mask is not None else torch.ones(B, N, dtype=torch.bool, device=points.device)
    keep = valid[:, start] | ~valid.any(1)
    cur = torch.where(keep, torch.full_like(keep, start, dtype=torch.int64), valid.to(torch.int8).argmax(1))
    inf = torch.full((B, N), float("inf"), dtype=acc, device=p.device)
    dist = torch.where(valid, inf, -inf)
    rows = torch.arange(B, device=p.device)
    picks = [cur]
    for _ in range(1, k):
        d = ((p - p[rows, cur].unsqueeze(1)) ** 2).sum(-1)
        dist = torch.where(valid, torch.minimum(dist, d), dist)
        cur = torch.argmax(dist, dim=1)
        picks.append(cur)
    return torch.stack(picks, dim=1)
