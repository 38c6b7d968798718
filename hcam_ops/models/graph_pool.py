"""CAST graph pooling (Ke et al., ICLR 2024), as the published CAST / H-CAST
code computes it: seeds by farthest point sampling, a centroid attention block
that predicts the grouping, soft assignment by scaled cosine similarity, and
the assignment-weighted average of the tokens through ``fc1`` / ``fc2``.

Module and parameter names follow the published code (``pool{i}.pool_block.
centroid_fc``, ``fc1.{0,1}``, ``fc2.{0,1}``) so released checkpoints load
strictly."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Attention
from torch import nn

from ..ops.farthest_point_sample import farthest_point_sample

# The cosine similarities are scaled by 5 before the softmax (published).
ASSIGN_SCALE = 5.0


def cast_seeds(tokens: torch.Tensor, valid: torch.Tensor, k: int) -> torch.Tensor:
    """CAST's seed rule: the mean of the valid tokens is prepended as point 0
    and every padded token is replaced by that mean; farthest point sampling
    (squared Euclidean, float64, ties to the lower index) starts at point 0,
    picks ``k + 1`` points and drops the first. So the first seed is the token
    farthest from the mean, and padding (at distance 0 from the start) is
    never picked while a real token is left. ``[B, k]`` indices into
    ``tokens``.

    When fewer than ``k`` distinct tokens exist, the sampler comes back to
    point 0 (the mean), which is no token: the published code stops on an
    assertion there; here such seeds repeat the first seed."""
    x = tokens.detach()
    w = valid.to(x.dtype).unsqueeze(-1)
    # The mean in the tokens' dtype, then float64 for the sampler: published.
    mean = (x * w).sum(1, keepdim=True) / w.sum(1, keepdim=True).clamp_min(1)
    filled = torch.where(valid.unsqueeze(-1), x, mean)
    points = torch.cat([mean, filled], 1).to(torch.float64)
    picks = farthest_point_sample(points, k + 1, 0)[:, 1:] - 1
    return torch.where(picks < 0, picks[:, :1].clamp_min(0), picks)


class CentroidBlock(nn.Module):
    """``centroid_fc``: a pre-norm attention block without an MLP, whose
    output is centred over the tokens and shifted by a learned bias
    (``x + attn(norm(x)) - mean_n(...) + bias``). All tokens attend, padding
    included, as published."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, norm_eps: float = 1e-6):
        super().__init__()
        # Registered first: the published state dict lists it before norm and attn.
        self.bias = nn.Parameter(torch.zeros(dim).normal_(0, 1e-2))
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads=num_heads, qkv_bias=qkv_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm(x))
        return x - x.mean(dim=1, keepdim=True) + self.bias


class GraphPoolBlock(nn.Module):
    """One graph pooling: ``N`` tokens to ``num_clusters`` centroids, and the
    class token through the same ``fc1`` / ``fc2``.

    ``forward(cls_token [B, 1, C], src [B, N, C], valid [B, N] bool)`` returns
    ``(cls_token, centroids [B, K, C], logits [B, N, K], seeds [B, K])``:
    ``logits`` are the scaled cosine similarities whose softmax over ``K`` is
    the soft assignment. As published, padded tokens take part in the
    centroid block and in the averages; only seeding excludes them.
    """

    def __init__(self, dim: int, num_clusters: int, num_heads: int = 12, drop_rate: float = 0.1):
        super().__init__()
        self.num_clusters = num_clusters
        self.centroid_fc = CentroidBlock(dim, num_heads)
        # Plain LayerNorm (eps 1e-5) here, unlike the 1e-6 of the blocks: published.
        self.fc1 = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 4 * dim), nn.GELU(), nn.Dropout(drop_rate))
        self.fc2 = nn.Sequential(nn.LayerNorm(4 * dim), nn.Linear(4 * dim, dim))

    def forward(self, cls_token: torch.Tensor, src: torch.Tensor, valid: torch.Tensor):
        B, N, C = src.shape
        if N < self.num_clusters:
            raise ValueError(
                f"CAST graph pooling: {N} tokens cannot pool to {self.num_clusters} clusters (the images need at "
                f"least {self.num_clusters} superpixels on the stem's grid, or fixed num_segments)"
            )
        seeds = cast_seeds(src, valid, self.num_clusters)
        at_seeds = seeds.unsqueeze(-1).expand(-1, -1, C)
        nodes = self.centroid_fc(src)
        centres = torch.gather(nodes, 1, at_seeds)
        logits = ASSIGN_SCALE * (F.normalize(nodes, dim=-1) @ F.normalize(centres, dim=-1).transpose(1, 2))
        assign = logits.softmax(dim=-1)
        h = self.fc1(torch.cat([cls_token, src], dim=1))
        pooled = assign.transpose(1, 2) @ h[:, 1:] / assign.sum(1).unsqueeze(-1)
        h = self.fc2(torch.cat([h[:, :1], pooled], dim=1))
        # Residuals: the seed token for each centroid, the class token for itself.
        centroids = h[:, 1:] + torch.gather(src, 1, at_seeds)
        return h[:, :1] + cls_token, centroids, logits, seeds


class GraphPool(nn.Module):
    """Holds a :class:`GraphPoolBlock` as ``pool_block`` (the published
    ``Pooling`` wrapper, kept for its state-dict prefix). ``forward`` returns
    ``(cls_token, logits, centroids, valid, seeds)``; every centroid is a real
    token, so ``valid`` is all true from the first pooling on."""

    def __init__(self, dim: int, num_clusters: int, num_heads: int = 12, drop_rate: float = 0.1):
        super().__init__()
        self.pool_block = GraphPoolBlock(dim, num_clusters, num_heads, drop_rate)

    def forward(self, cls_token: torch.Tensor, x: torch.Tensor, valid: torch.Tensor):
        cls_token, centroids, logits, seeds = self.pool_block(cls_token, x, valid)
        return cls_token, logits, centroids, valid.new_ones(centroids.shape[:2]), seeds
