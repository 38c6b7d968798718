"""H-CAST: a hierarchical classifier on CAST (superpixel tokens pooled into
fewer clusters stage by stage), registered with timm. Its first pooled tokens
(``centroid1``) feed :func:`hcam_ops.cam_kl_loss` between the fine and coarse
heads."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from timm.models import register_model
from timm.models.vision_transformer import Block
from torch import nn

from ..ops.segment_mean import segment_mean
from ._factory import check_kwargs, refuse_pretrained
from .graph_pool import GraphPool


def _conv_bn_relu(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class ConvStem(nn.Module):
    """Four 3x3 conv/BN/ReLU layers, three of stride 2 (stride 8 in all), then
    a 1x1 conv to the embedding: 224 -> 28 x 28."""

    def __init__(self, in_chans: int, embed_dim: int):
        super().__init__()
        w = embed_dim // 8
        self.layers = nn.Sequential(
            _conv_bn_relu(in_chans, w, 2),
            _conv_bn_relu(w, 2 * w, 2),
            _conv_bn_relu(2 * w, 4 * w, 2),
            _conv_bn_relu(4 * w, 4 * w, 1),
        )
        self.proj = nn.Conv2d(4 * w, embed_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.layers(x))


class HCAST(nn.Module):
    """CAST backbone with hierarchical heads.

    Args:
        num_classes: classes per level, fine to coarse (2 or 3 levels); an int
            gives one level.
        img_size: input size; the token grid is ``img_size // 8``.
        num_segments: superpixel ids run in ``[0, num_segments)``; segments
            absent from an image are padding (masked in attention and pooling).
        embed_dim, depths, num_heads, mlp_ratio: the ViT stages.
        num_clusters: graph pooling after each stage (CAST: 64, 32, 16, 8).
        assign_scale: the cosine-similarity scale of the soft assignment.
        return_intermediates: the default of ``forward``'s flag.

    ``forward(x [B, 3, H, W], segments [B, H, W] int)`` returns the list of
    logits per level (from the final class token). With
    ``return_intermediates=True`` it returns ``(logits, intermediates)``:
    ``centroid{i}`` the pooled tokens after stage ``i`` (``centroid1`` is
    ``[B, 64, C]``), ``assign{i}`` the soft assignments ``[B, N_i, K_i]``,
    ``indices{i}`` the seeds, ``tokens`` the segment tokens ``[B, S, C]``,
    ``segment_mask`` ``[B, S]`` and ``segments`` the id map on the token grid,
    so a CAM on ``centroid1`` maps back to pixels through
    ``assign1 -> segments``.
    """

    def __init__(
        self,
        num_classes: int | Sequence[int] = (100, 70, 30),
        img_size: int = 224,
        in_chans: int = 3,
        num_segments: int = 256,
        embed_dim: int = 384,
        depths: Sequence[int] = (3, 3, 3, 2),
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        num_clusters: Sequence[int] = (64, 32, 16, 8),
        assign_scale: float = 5.0,
        drop_path_rate: float = 0.0,
        return_intermediates: bool = False,
        **kwargs,
    ):
        super().__init__()
        check_kwargs("HCAST", kwargs)
        if len(depths) != len(num_clusters):
            raise ValueError("HCAST: one num_clusters entry per stage")
        self.levels = [num_classes] if isinstance(num_classes, int) else list(num_classes)
        self.num_classes = self.levels[0]
        self.num_segments = num_segments
        self.embed_dim = self.num_features = embed_dim
        self.return_intermediates = return_intermediates
        grid = img_size // 8
        self.stem = ConvStem(in_chans, embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid, embed_dim))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.stages = nn.ModuleList()
        for i, d in enumerate(depths):
            first = sum(depths[:i])
            self.stages.append(
                nn.ModuleList(
                    Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, drop_path=rates[first + j]) for j in range(d)
                )
            )
        self.pools = nn.ModuleList(GraphPool(embed_dim, k, assign_scale) for k in num_clusters)
        self.norm = nn.LayerNorm(embed_dim)
        self.heads = nn.ModuleList(nn.Linear(embed_dim, n) for n in self.levels)
        trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_(self.cls_token, std=0.02)
        self.apply(self._init)

    @staticmethod
    def _init(m):
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def segment_tokens(self, x: torch.Tensor, segments: torch.Tensor):
        """Stem features plus positions, averaged within each segment:
        ``(tokens [B, S, C], mask [B, S], segments on the token grid)``."""
        feat = self.stem(x)
        B, C, h, w = feat.shape
        if self.pos_embed.shape[1] != h * w:
            raise ValueError(
                f"HCAST: a {h}x{w} token grid, but the model was built for {self.pos_embed.shape[1]} cells"
            )
        if segments.shape != (B, x.shape[2], x.shape[3]):
            raise ValueError(
                f"HCAST: segments must be [B, H, W] = [{B}, {x.shape[2]}, {x.shape[3]}], got {list(segments.shape)}"
            )
        grid = F.interpolate(segments[:, None].float(), size=(h, w), mode="nearest")[:, 0].to(torch.int64)
        pix = feat.flatten(2).transpose(1, 2) + self.pos_embed
        tokens, counts = segment_mean(pix.reshape(B, h, w, C), grid, self.num_segments)
        return tokens, counts > 0, grid

    def forward(self, x: torch.Tensor, segments: torch.Tensor, return_intermediates: bool | None = None):
        want = self.return_intermediates if return_intermediates is None else return_intermediates
        tokens, mask, grid = self.segment_tokens(x, segments)
        inter = {"tokens": tokens, "segment_mask": mask, "segments": grid}
        B = tokens.shape[0]
        h = torch.cat([self.cls_token.expand(B, -1, -1), tokens], dim=1)
        valid = torch.cat([mask.new_ones(B, 1), mask], dim=1)
        for i, (blocks, pool) in enumerate(zip(self.stages, self.pools), start=1):
            bias = torch.zeros(valid.shape, dtype=h.dtype, device=h.device).masked_fill(~valid, float("-inf"))
            bias = bias[:, None, None, :]
            for blk in blocks:
                h = blk(h, attn_mask=bias)
            clusters, assign, idx = pool(h[:, 1:], valid[:, 1:])
            inter[f"centroid{i}"], inter[f"assign{i}"], inter[f"indices{i}"] = clusters, assign, idx
            h = torch.cat([h[:, :1], clusters], dim=1)
            valid = valid.new_ones(B, h.shape[1])
        cls = self.norm(h)[:, 0]
        logits = [head(cls) for head in self.heads]
        return (logits, inter) if want else logits


def clusters_to_grid(values: torch.Tensor, intermediates: dict, stage: int = 1) -> torch.Tensor:
    """Map per-cluster values of stage ``stage`` (a CAM on ``centroid{stage}``,
    ``[B, K]``) back to the token grid ``[B, h, w]``: through the soft
    assignments down to the segment tokens, then through the segment map."""
    v = values
    for i in range(stage, 0, -1):
        v = (intermediates[f"assign{i}"] @ v.unsqueeze(-1)).squeeze(-1)  # [B, N_i]
    grid = intermediates["segments"]
    B, h, w = grid.shape
    v = torch.cat([v, v.new_zeros(B, 1)], dim=1)  # ids off the range land on a zero
    ids = torch.where((grid >= 0) & (grid < v.shape[1] - 1), grid, v.shape[1] - 1)
    return torch.gather(v, 1, ids.reshape(B, -1)).reshape(B, h, w)


def _create(variant: str, pretrained: bool, default_dim: int, **kwargs) -> HCAST:
    refuse_pretrained(variant, pretrained)
    return HCAST(**{"embed_dim": default_dim, **kwargs})


@register_model
def hcast_small(pretrained: bool = False, **kwargs) -> HCAST:
    return _create("hcast_small", pretrained, 384, **kwargs)


@register_model
def hcast_base(pretrained: bool = False, **kwargs) -> HCAST:
    return _create("hcast_base", pretrained, 768, **kwargs)


@register_model
def cast_small_cam(pretrained: bool = False, **kwargs) -> HCAST:
    """hcast_small returning its intermediates by default."""
    return _create("cast_small_cam", pretrained, 384, **{"return_intermediates": True, **kwargs})


@register_model
def cast_base_cam(pretrained: bool = False, **kwargs) -> HCAST:
    return _create("cast_base_cam", pretrained, 768, **{"return_intermediates": True, **kwargs})
