"""Plain-PyTorch FGD / DistillBEV terms (docs/ops/fgd.md#fgd_loss): the contract of
hcam_ops.fgd_loss, written as the docs read."""

from __future__ import annotations

import inspect
from types import SimpleNamespace

import torch

from ..ops.fgd_loss import fgd_loss as _fused

# The op's signature: its keywords and their defaults (FGD_LOSS_DEFAULTS).
_SIGNATURE = inspect.signature(_fused)


def attention(x: torch.Tensor, spatial_temperature: float, channel_temperature: float):
    """``A_s`` ``[B, H, W]`` and ``A_c`` ``[B, C]`` of a map ``[B, C, H, W]``."""
    B, C, H, W = x.shape
    a = x.abs()
    spatial = H * W * torch.softmax(a.mean(1).reshape(B, -1) / spatial_temperature, dim=1)
    channel = C * torch.softmax(a.mean((2, 3)) / channel_temperature, dim=1)
    return spatial.reshape(B, H, W), channel


def fgd_loss(student: torch.Tensor, teacher: torch.Tensor, fg_mask: torch.Tensor, bg_mask: torch.Tensor, **options):
    """hcam_ops.fgd_loss's signature: its keywords, with their defaults
    (FGD_LOSS_DEFAULTS: FGD's FeatureLoss defaults, DistillBEV's switches)."""
    bound = _SIGNATURE.bind(student, teacher, fg_mask, bg_mask, **options)
    bound.apply_defaults()
    o = SimpleNamespace(**bound.arguments)
    B, C, H, W = student.shape
    t = teacher.detach()
    n = max(B, 1)
    s_t, c_t = attention(t, o.spatial_temperature, o.channel_temperature)
    s_s, c_s = attention(student, o.spatial_temperature, o.channel_temperature)
    if o.spatial_attention == "teacher":
        weight_s = s_t
    elif o.spatial_attention == "student_mix":
        r = o.spatial_student_ratio
        weight_s = ((s_t + r * s_s) / (1 + r)).detach()
    elif o.spatial_attention == "combined":
        weight_s = torch.sqrt(s_t * s_s.detach())
    else:
        raise ValueError(
            f"fgd_loss: spatial_attention must be 'teacher', 'combined' or 'student_mix', got {o.spatial_attention!r}"
        )
    fg = fg_mask.detach().reshape(B, 1, H, W).to(student.dtype)
    bg = bg_mask.detach().reshape(B, 1, H, W).to(student.dtype)
    fp = torch.zeros_like(fg) if o.fp_mask is None else o.fp_mask.detach().reshape(B, 1, H, W).to(student.dtype)
    sq = (student - t) ** 2
    # fg and bg: the switches replace a weight by 1; fp: always both weights.
    err = sq
    if o.spatial_mask:
        err = err * weight_s[:, None]
    if o.channel_mask:
        err = err * c_t[:, :, None, None]
    err_fp = weight_s[:, None] * c_t[:, :, None, None] * sq
    terms = {
        "loss_fg": o.fg_weight * (fg * err).sum() / n,
        "loss_bg": o.bg_weight * (bg * err).sum() / n,
        "loss_attention": o.attention_weight * ((c_s - c_t).abs().sum() + (s_s - s_t).abs().sum()) / n,
        "loss_channel": o.channel_weight * (t.mean((2, 3)) - student.mean((2, 3))).abs().sum() / n,
        "loss_spatial": o.spatial_weight * (t.mean(1) - student.mean(1)).abs().sum() / n,
        "loss_fp": o.fp_weight * (fp * err_fp).sum() / n,
    }
    return terms


fgd_loss.__signature__ = _SIGNATURE
