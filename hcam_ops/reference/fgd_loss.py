"""Plain-PyTorch FGD / DistillBEV terms (docs/ops/fgd.md#fgd_loss): the contract of
hcam_ops.fgd_loss, written as the docs read."""

from __future__ import annotations

import torch

TERMS = ("loss_fg", "loss_bg", "loss_attention", "loss_channel", "loss_spatial", "loss_fp")


def attention(x: torch.Tensor, spatial_temperature: float, channel_temperature: float):
    """``A_s`` ``[B, H, W]`` and ``A_c`` ``[B, C]`` of a map ``[B, C, H, W]``."""
    B, C, H, W = x.shape
    a = x.abs()
    spatial = H * W * torch.softmax(a.mean(1).reshape(B, -1) / spatial_temperature, dim=1)
    channel = C * torch.softmax(a.mean((2, 3)) / channel_temperature, dim=1)
    return spatial.reshape(B, H, W), channel


def fgd_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    fg_mask: torch.Tensor,
    bg_mask: torch.Tensor,
    *,
    spatial_temperature: float = 0.5,
    channel_temperature: float = 0.5,
    fg_weight: float = 1e-3,
    bg_weight: float = 5e-4,
    attention_weight: float = 1e-3,
    channel_weight: float = 0.0,
    spatial_weight: float = 0.0,
    spatial_attention: str = "teacher",
    spatial_student_ratio: float = 1.0,
    spatial_mask: bool = True,
    channel_mask: bool = True,
    fp_mask: torch.Tensor | None = None,
    fp_weight: float = 0.0,
    check_finite: bool = True,
) -> dict[str, torch.Tensor]:
    """Defaults: FGD's FeatureLoss class defaults, DistillBEV's switches (see hcam_ops.fgd_loss)."""
    B, C, H, W = student.shape
    t = teacher.detach()
    n = max(B, 1)
    s_t, c_t = attention(t, spatial_temperature, channel_temperature)
    s_s, c_s = attention(student, spatial_temperature, channel_temperature)
    if spatial_attention == "teacher":
        weight_s = s_t
    elif spatial_attention == "student_mix":
        r = spatial_student_ratio
        weight_s = ((s_t + r * s_s) / (1 + r)).detach()
    elif spatial_attention == "combined":
        weight_s = torch.sqrt(s_t * s_s.detach())
    else:
        raise ValueError(
            f"fgd_loss: spatial_attention must be 'teacher', 'combined' or 'student_mix', got {spatial_attention!r}"
        )
    fg = fg_mask.detach().reshape(B, 1, H, W).to(student.dtype)
    bg = bg_mask.detach().reshape(B, 1, H, W).to(student.dtype)
    fp = torch.zeros_like(fg) if fp_mask is None else fp_mask.detach().reshape(B, 1, H, W).to(student.dtype)
    sq = (student - t) ** 2
    # fg and bg: the switches replace a weight by 1; fp: always both weights.
    err = sq
    if spatial_mask:
        err = err * weight_s[:, None]
    if channel_mask:
        err = err * c_t[:, :, None, None]
    err_fp = weight_s[:, None] * c_t[:, :, None, None] * sq
    terms = {
        "loss_fg": fg_weight * (fg * err).sum() / n,
        "loss_bg": bg_weight * (bg * err).sum() / n,
        "loss_attention": attention_weight * ((c_s - c_t).abs().sum() + (s_s - s_t).abs().sum()) / n,
        "loss_channel": channel_weight * (t.mean((2, 3)) - student.mean((2, 3))).abs().sum() / n,
        "loss_spatial": spatial_weight * (t.mean(1) - student.mean(1)).abs().sum() / n,
        "loss_fp": fp_weight * (fp * err_fp).sum() / n,
    }
    return terms
