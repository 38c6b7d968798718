"""FGDLoss: the distillation module a detector or BEV model holds
(docs/ops/fgd.md#fgdloss), around the fused hcam_ops.fgd_loss."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..distill import region_weights
from ..ops.fgd_loss import TERMS, fgd_loss
from ..ops.fgd_masks import fgd_masks_from_boxes
from .gc_block import GcBlock

# The default weights of docs/ops/fgd.md#presets; DistillBEV weights cells by the combined
# teacher-student spatial attention.
PRESETS = {
    "fgd": dict(
        spatial_temperature=0.5,
        channel_temperature=0.5,
        fg_weight=1e-3,
        bg_weight=5e-4,
        attention_weight=1e-3,
        global_weight=5e-6,
        channel_weight=0.0,
        spatial_weight=0.0,
        spatial_attention="teacher",
    ),
    "distillbev": dict(
        spatial_temperature=0.5,
        channel_temperature=0.5,
        fg_weight=1.5e-3,
        bg_weight=4e-2,
        attention_weight=0.0,
        global_weight=0.0,
        channel_weight=0.25,
        spatial_weight=2.5e-3,
        spatial_attention="combined",
    ),
}


def _levels(x) -> list:
    return list(x) if isinstance(x, (list, tuple)) else [x]


class FGDLoss(nn.Module):
    """Focal and global feature distillation over one or more feature levels.

    Args:
        student_channels, teacher_channels: an int or one per level. A level
            whose counts differ gets a 1x1 conv adapter on the student side.
        spatial_temperature, channel_temperature, fg_weight, bg_weight,
        attention_weight, channel_weight, spatial_weight, spatial_attention:
            as :func:`hcam_ops.fgd_loss`.
        global_weight: weight of the global relation term (a learnable
            :class:`GcBlock` per level, shared by student and teacher); 0
            builds no block.
        spatial_adapter: a learnable 3x3 conv ``G`` on the student's channel
            mean for the pooled spatial term (else ``G`` is the identity and
            the term is computed inside the fused op).
        region_weights: ``{"tp", "fp", "fn", "tn"}`` weights that multiply
            both masks per cell when teacher and ground-truth heatmaps are
            given to ``forward`` (DistillBEV); ``region_threshold`` is ``tau``.

    ``forward(student, teacher, *, boxes=None, img_shape=None, fg_mask=None,
    bg_mask=None, teacher_heatmap=None, gt_heatmap=None)`` takes a map or a
    list of maps per level; masks come from ``fg_mask``/``bg_mask`` (a tensor,
    or one per level) or are built from ``boxes`` at each level's size. It
    returns the terms summed over levels: ``loss_fg``, ``loss_bg``,
    ``loss_attention``, ``loss_channel``, ``loss_spatial`` and, with a global
    weight, ``loss_global``.
    """

    def __init__(
        self,
        student_channels: int | Sequence[int],
        teacher_channels: int | Sequence[int],
        *,
        spatial_temperature: float = 0.5,
        channel_temperature: float = 0.5,
        fg_weight: float = 1e-3,
        bg_weight: float = 5e-4,
        attention_weight: float = 0.0,
        channel_weight: float = 0.0,
        spatial_weight: float = 0.0,
        global_weight: float = 0.0,
        spatial_attention: str = "teacher",
        spatial_adapter: bool = False,
        region_weights: dict[str, float] | None = None,
        region_threshold: float = 0.1,
    ):
        super().__init__()
        s_ch, t_ch = _levels(student_channels), _levels(teacher_channels)
        if len(s_ch) != len(t_ch):
            raise ValueError(f"FGDLoss: {len(s_ch)} student levels but {len(t_ch)} teacher levels")
        self.num_levels = len(s_ch)
        self.op_kwargs = dict(
            spatial_temperature=spatial_temperature,
            channel_temperature=channel_temperature,
            fg_weight=fg_weight,
            bg_weight=bg_weight,
            attention_weight=attention_weight,
            channel_weight=channel_weight,
            spatial_attention=spatial_attention,
        )
        self.spatial_weight = float(spatial_weight)
        self.global_weight = float(global_weight)
        self.region_weights = region_weights
        self.region_threshold = region_threshold
        self.adapters = nn.ModuleList(
            nn.Conv2d(s, t, kernel_size=1) if s != t else nn.Identity() for s, t in zip(s_ch, t_ch)
        )
        self.spatial_adapters = (
            nn.ModuleList(nn.Conv2d(1, 1, kernel_size=3, padding=1) for _ in t_ch) if spatial_adapter else None
        )
        self.global_blocks = nn.ModuleList(GcBlock(t) for t in t_ch) if self.global_weight > 0 else None

    @classmethod
    def from_preset(cls, name: str, student_channels, teacher_channels, **overrides) -> FGDLoss:
        """``"fgd"`` or ``"distillbev"`` with the weights of docs/ops/fgd.md#presets; any
        keyword overrides one."""
        if name not in PRESETS:
            raise ValueError(f"FGDLoss.from_preset: unknown preset {name!r}; one of {sorted(PRESETS)}")
        return cls(student_channels, teacher_channels, **{**PRESETS[name], **overrides})

    def _masks(self, level, shape, boxes, img_shape, fg_mask, bg_mask):
        if fg_mask is not None or bg_mask is not None:
            if fg_mask is None or bg_mask is None:
                raise ValueError("FGDLoss: give both fg_mask and bg_mask, or boxes")
            fg, bg = _levels(fg_mask), _levels(bg_mask)
            if len(fg) != self.num_levels or len(bg) != self.num_levels:
                raise ValueError(f"FGDLoss: masks for {len(fg)} levels, model has {self.num_levels}")
            return fg[level], bg[level]
        if boxes is None or img_shape is None:
            raise ValueError("FGDLoss: needs boxes and img_shape, or fg_mask and bg_mask")
        return fgd_masks_from_boxes(boxes, img_shape, shape)

    def forward(
        self,
        student,
        teacher,
        *,
        boxes=None,
        img_shape=None,
        fg_mask=None,
        bg_mask=None,
        teacher_heatmap=None,
        gt_heatmap=None,
    ) -> dict[str, torch.Tensor]:
        students, teachers = _levels(student), _levels(teacher)
        if len(students) != self.num_levels or len(teachers) != self.num_levels:
            raise ValueError(
                f"FGDLoss: got {len(students)} student and {len(teachers)} teacher maps for {self.num_levels} levels"
            )
        totals: dict[str, torch.Tensor] = {}
        for i, (s, t) in enumerate(zip(students, teachers)):
            s, t = self.adapters[i](s), t.detach()
            B, _, H, W = t.shape
            fg, bg = self._masks(i, (H, W), boxes, img_shape, fg_mask, bg_mask)
            if self.region_weights is not None and teacher_heatmap is not None and gt_heatmap is not None:
                r = region_weights(teacher_heatmap, gt_heatmap, self.region_threshold, self.region_weights)
                r = F.interpolate(r[:, None], size=(H, W), mode="nearest").to(fg.dtype)
                fg, bg = fg.reshape(B, 1, H, W) * r, bg.reshape(B, 1, H, W) * r
            inner_spatial = 0.0 if self.spatial_adapters is not None else self.spatial_weight
            terms = fgd_loss(s, t, fg, bg, spatial_weight=inner_spatial, **self.op_kwargs)
            if self.spatial_adapters is not None:
                pooled = self.spatial_adapters[i](s.mean(1, keepdim=True))
                terms["loss_spatial"] = self.spatial_weight * (t.mean(1, keepdim=True) - pooled).abs().sum() / max(B, 1)
            if self.global_blocks is not None:
                block = self.global_blocks[i]
                terms["loss_global"] = self.global_weight * ((block(s) - block(t)) ** 2).sum() / max(B, 1)
            for k, v in terms.items():
                totals[k] = totals[k] + v if k in totals else v
        return totals


__all__ = ["FGDLoss", "PRESETS", "TERMS"]
