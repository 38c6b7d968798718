"""CAST graph pooling: tokens to fewer clusters (CAST, ICLR 2024)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import Mlp
from torch import nn

from ..ops.farthest_point_sample import farthest_point_sample


class GraphPool(nn.Module):
    """Seeds by farthest point sampling in feature space, soft assignment of
    every token to the seeds by scaled cosine similarity, the
    assignment-weighted average of the tokens per seed through a small MLP,
    plus the seed itself (residual).

    ``forward(tokens [B, N, C], mask [B, N] bool)`` returns ``(clusters
    [B, K, C], assignment [B, N, K], seed indices [B, K])``; masked (padding)
    tokens have a zero assignment row. ``K = min(num_clusters, N)``.
    """

    def __init__(self, dim: int, num_clusters: int, scale: float = 5.0, mlp_ratio: float = 1.0):
        super().__init__()
        self.num_clusters = num_clusters
        self.scale = scale
        self.norm = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, hidden_features=int(dim * mlp_ratio), out_features=dim)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor):
        B, N, C = tokens.shape
        k = min(self.num_clusters, N)
        idx = farthest_point_sample(tokens, k, 0, mask)  # not differentiable: it detaches
        seeds = torch.gather(tokens, 1, idx.unsqueeze(-1).expand(B, k, C))
        sim = F.normalize(tokens, dim=-1) @ F.normalize(seeds, dim=-1).transpose(1, 2)
        assign = torch.softmax(self.scale * sim, dim=-1) * mask.unsqueeze(-1).to(tokens.dtype)
        pooled = assign.transpose(1, 2) @ tokens / assign.sum(1).unsqueeze(-1).clamp_min(1e-6)
        return seeds + self.mlp(self.norm(pooled)), assign, idx
