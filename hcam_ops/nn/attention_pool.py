"""CLIP's attention pool (openai/CLIP ``clip/model.py``, ``AttentionPool2d``),
which can hand back its attention over the map's positions.

The map's mean is prepended as a query token, a learned positional embedding
is added to every token, and the mean token attends, with several heads, to
itself and to every position; the projected result is the pooled vector.
BiT-Align's locate model (``models/locate.py``, the seed 002's
``image_features_attn``) uses the same module on a DINO ViT's patch features
and reads its attention weights to make a spatial mask.

Why not timm's ``timm.layers.AttentionPool2d``: it computes the softmaxed
weights inside ``forward`` (or never, on the fused path) and hands them to no
module, so nothing outside can read them; its parameters are also laid out
differently (one ``qkv`` linear, ``pos_embed``) from CLIP's, whose state dicts
(``visual.attnpool.*``) and BiT-Align's load into this module as they are.
:func:`hcam_ops.cam.pool_attention` reads a timm pool's weights by
recomputing them from its parameters instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._cli import InputError


def _pair(size) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


class AttentionPool2d(nn.Module):
    """``[B, C, H, W] -> [B, output_dim]``; with ``return_attention`` also the
    pooled (mean) token's attention over the positions, per head,
    ``[B, num_heads, H, W]``.

    ``spatial_dim``: the map's side (CLIP's ``spacial_dim``), or ``(H, W)``;
    the positional embedding has one row per position plus the mean token's,
    and is not resampled (as CLIP's), so the map must have that size.
    Parameter names are CLIP's: ``positional_embedding``, ``q_proj``,
    ``k_proj``, ``v_proj``, ``c_proj``.

    Only the mean token is a query: CLIP and BiT-Align run every token as a
    query, but the pooled vector (their ``x[0]``) and the weights they read
    (their row 0) are the mean token's alone, and those are what this module
    returns. The returned map leaves out the mean token's weight on itself
    (BiT-Align's ``[:, 0, 1:]``), so a head's map sums to less than 1.
    """

    def __init__(
        self, spatial_dim: int | tuple[int, int], embed_dim: int, num_heads: int, output_dim: int | None = None
    ):
        super().__init__()
        self.spatial_size = _pair(spatial_dim)
        if min(self.spatial_size) < 1:
            raise InputError("spatial_dim", f"must be positive, got {spatial_dim}")
        if num_heads < 1 or embed_dim % num_heads:
            raise InputError("num_heads", f"must divide embed_dim {embed_dim}, got {num_heads}")
        positions = self.spatial_size[0] * self.spatial_size[1]
        # CLIP's initialisation: N(0, 1 / embed_dim) for the embedding.
        self.positional_embedding = nn.Parameter(torch.randn(positions + 1, embed_dim) / embed_dim**0.5)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, output_dim or embed_dim)
        self.num_heads = num_heads

    def _check(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            raise InputError("x", f"expected a feature map [B, C, H, W], got {getattr(x, 'shape', type(x).__name__)}")
        C, H, W = x.shape[1:]
        if C != self.k_proj.in_features:
            raise InputError("x", f"expected {self.k_proj.in_features} channels, got {C}")
        if (H, W) != self.spatial_size:
            raise InputError(
                "x",
                f"expected a {self.spatial_size[0]} x {self.spatial_size[1]} map (the positional embedding's), "
                f"got {H} x {W}",
            )

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        self._check(x)
        B, C, H, W = x.shape
        heads, head_dim = self.num_heads, C // self.num_heads
        tokens = x.flatten(2).transpose(1, 2)  # [B, HW, C]
        tokens = torch.cat([tokens.mean(1, keepdim=True), tokens], dim=1)
        tokens = tokens + self.positional_embedding.to(tokens.dtype)
        q = self.q_proj(tokens[:, :1]).view(B, 1, heads, head_dim).transpose(1, 2)  # [B, heads, 1, d]
        k = self.k_proj(tokens).view(B, -1, heads, head_dim).transpose(1, 2)  # [B, heads, 1 + HW, d]
        v = self.v_proj(tokens).view(B, -1, heads, head_dim).transpose(1, 2)
        weights = F.softmax((q * head_dim**-0.5) @ k.transpose(-2, -1), dim=-1)  # [B, heads, 1, 1 + HW]
        pooled = self.c_proj((weights @ v).reshape(B, C))
        if not return_attention:
            return pooled
        return pooled, weights[:, :, 0, 1:].reshape(B, heads, H, W)
