"""hcam_ops.fgd_loss: FGD / DistillBEV feature distillation (docs/ops/fgd.md#fgd_loss).

The forward reads student and teacher once: the teacher's and student's
spatial and channel attentions, the pooled means and the masked, attention-
weighted squared errors (fg, bg, fp) all come out of one tiled pass plus a per-sample
finisher on the reduced vectors (csrc/ops/fgd_math.h). The backward reads
them once more and writes ``d student`` directly; what is saved between the
two is a few ``[B, HW]`` and ``[B, C]`` vectors, never a map.
"""

from __future__ import annotations

import math
from types import MappingProxyType

import torch

from . import _checks
from ._constants import FGD_NUM_COL, FGD_NUM_ROW, FGD_NUM_SAMPLE, FGD_NUM_TERMS
from ._dtypes import acc_dtype

_OP = "fgd_loss"
TERMS = ("loss_fg", "loss_bg", "loss_attention", "loss_channel", "loss_spatial", "loss_fp")
# The kernel's spatial_mode index is the position here (csrc/ops/fgd_math.h FgdSpatialMode).
SPATIAL_ATTENTION = ("teacher", "combined", "student_mix")
# The loss's options and their defaults, the one source of fgd_loss's signature
# (and so of its reference's, hcam_ops.reference.fgd_loss) and of
# hcam_ops.nn.FGDLoss's: FGD's FeatureLoss defaults (yzd-v/FGD,
# mmdet/distillation/losses/fgd.py: temp 0.5, alpha_fgd 1e-3, beta_fgd 5e-4,
# gamma_fgd 1e-3), the DistillBEV-only terms off, and DistillBEV's switches
# (its config: a student ratio of 1.0, both masks on).
FGD_LOSS_DEFAULTS = MappingProxyType(
    {
        "spatial_temperature": 0.5,
        "channel_temperature": 0.5,
        "fg_weight": 1e-3,
        "bg_weight": 5e-4,
        "attention_weight": 1e-3,
        "channel_weight": 0.0,
        "spatial_weight": 0.0,
        "spatial_attention": "teacher",
        "spatial_student_ratio": 1.0,
        "spatial_mask": True,
        "channel_mask": True,
        "fp_weight": 0.0,
    }
)


@torch.library.register_fake("hcam_ops::fgd_loss")
def _forward_fake(
    student, teacher, fg_mask, bg_mask, fp_mask, spatial_temperature, channel_temperature, weights, *options
):
    B, C, H, W = student.shape
    torch._check(
        len(weights) == FGD_NUM_TERMS,
        lambda: f"{_OP}: weights must hold {FGD_NUM_TERMS} values (fg, bg, attention, channel, spatial, fp)",
    )
    acc = acc_dtype(student.dtype)
    return (
        student.new_empty((FGD_NUM_TERMS,)),
        student.new_empty((B, FGD_NUM_COL, H * W), dtype=acc),
        student.new_empty((B, FGD_NUM_ROW, C), dtype=acc),
        student.new_empty((B, FGD_NUM_SAMPLE), dtype=acc),
    )


@torch.library.register_fake("hcam_ops::fgd_loss_backward")
def _backward_fake(grad, student, teacher, fg_mask, bg_mask, fp_mask, col, row, sample, *options):
    for t, name in ((grad, "grad"), (col, "col"), (row, "row"), (sample, "sample")):
        _checks.check_same_device_fake(t, name, student, "student", "fgd_loss_backward")
    B, C, H, W = student.shape
    torch._check(grad.numel() == FGD_NUM_TERMS, lambda: f"{_OP}_backward: grad must hold {FGD_NUM_TERMS} values")
    torch._check(
        tuple(col.shape) == (B, FGD_NUM_COL, H * W)
        and tuple(row.shape) == (B, FGD_NUM_ROW, C)
        and tuple(sample.shape) == (B, FGD_NUM_SAMPLE),
        lambda: f"{_OP}_backward: saved statistics do not match the maps {tuple(student.shape)}",
    )
    return student.new_empty(student.shape)


def _setup_context(ctx, inputs, output):
    student, teacher, fg_mask, bg_mask, fp_mask = inputs[:5]
    _, col, row, sample = output
    ctx.mark_non_differentiable(col, row, sample)
    ctx.args = inputs[5:]
    ctx.n_inputs = len(inputs)
    ctx.save_for_backward(student, teacher, fg_mask, bg_mask, fp_mask, col, row, sample)


def _backward(ctx, grad_terms, _col, _row, _sample):
    student, teacher, fg_mask, bg_mask, fp_mask, col, row, sample = ctx.saved_tensors
    grad_student = torch.ops.hcam_ops.fgd_loss_backward(
        grad_terms, student, teacher, fg_mask, bg_mask, fp_mask, col, row, sample, *ctx.args
    )
    # Only the student is differentiable (the student part of the spatial
    # weight is detached in every mode, as in the published code).
    return (grad_student,) + (None,) * (ctx.n_inputs - 1)


torch.library.register_autograd("hcam_ops::fgd_loss", _backward, setup_context=_setup_context)


def _as_mask(mask, student: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{_OP}: {name} must be a tensor, got {type(mask).__name__}")
    B, _, H, W = student.shape
    if tuple(mask.shape) not in ((B, H, W), (B, 1, H, W)):
        raise ValueError(f"{_OP}: {name} must be [B, H, W] or [B, 1, H, W] = [{B}, {H}, {W}], got {tuple(mask.shape)}")
    _checks.check_same_device(student, mask, _OP, name, "student")
    if not mask.is_floating_point():
        mask = mask.to(acc_dtype(student.dtype))
    return mask


def _check(student, teacher, spatial_temperature, channel_temperature, weights, spatial_attention, ratio, switches):
    _checks.check_float(student, _OP, "student")
    _checks.check_float(teacher, _OP, "teacher")
    if student.dim() != 4:
        raise ValueError(f"{_OP}: student must be [B, C, H, W], got shape {tuple(student.shape)}")
    if teacher.shape != student.shape:
        raise ValueError(
            f"{_OP}: student {tuple(student.shape)} and teacher {tuple(teacher.shape)} must have one shape "
            "(map the student to the teacher's channels with an adapter first)"
        )
    if teacher.device != student.device:
        raise ValueError(f"{_OP}: teacher is on {teacher.device}, student on {student.device}")
    if student.shape[1] == 0 or student.shape[2] * student.shape[3] == 0:
        raise ValueError(f"{_OP}: maps need C > 0 and H * W > 0, got shape {tuple(student.shape)}")
    _checks.check_temperature(spatial_temperature, _OP, "spatial_temperature")
    _checks.check_temperature(channel_temperature, _OP, "channel_temperature")
    for name, w in weights.items():
        if not math.isfinite(_checks.check_real(w, _OP, name)):
            raise ValueError(f"{_OP}: {name} must be finite, got {w}")
    _checks.check_choice(spatial_attention, SPATIAL_ATTENTION, _OP, "spatial_attention")
    if not (math.isfinite(_checks.check_real(ratio, _OP, "spatial_student_ratio")) and float(ratio) >= 0):
        raise ValueError(f"{_OP}: spatial_student_ratio must be non-negative and finite, got {ratio}")
    for name, v in switches.items():
        if not isinstance(v, bool):
            raise TypeError(f"{_OP}: {name} must be a bool, got {type(v).__name__}")


def fgd_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    fg_mask: torch.Tensor,
    bg_mask: torch.Tensor,
    *,
    spatial_temperature: float = FGD_LOSS_DEFAULTS["spatial_temperature"],
    channel_temperature: float = FGD_LOSS_DEFAULTS["channel_temperature"],
    fg_weight: float = FGD_LOSS_DEFAULTS["fg_weight"],
    bg_weight: float = FGD_LOSS_DEFAULTS["bg_weight"],
    attention_weight: float = FGD_LOSS_DEFAULTS["attention_weight"],
    channel_weight: float = FGD_LOSS_DEFAULTS["channel_weight"],
    spatial_weight: float = FGD_LOSS_DEFAULTS["spatial_weight"],
    spatial_attention: str = FGD_LOSS_DEFAULTS["spatial_attention"],
    spatial_student_ratio: float = FGD_LOSS_DEFAULTS["spatial_student_ratio"],
    spatial_mask: bool = FGD_LOSS_DEFAULTS["spatial_mask"],
    channel_mask: bool = FGD_LOSS_DEFAULTS["channel_mask"],
    fp_mask: torch.Tensor | None = None,
    fp_weight: float = FGD_LOSS_DEFAULTS["fp_weight"],
    check_finite: bool = True,
) -> dict[str, torch.Tensor]:
    """The FGD / DistillBEV feature-distillation terms (docs/ops/fgd.md#fgd_loss), fused.

    The defaults are FGD's (yzd-v/FGD ``FeatureLoss``'s own defaults:
    ``temp = 0.5``, ``alpha_fgd = 1e-3``, ``beta_fgd = 5e-4``,
    ``gamma_fgd = 1e-3``; its RetinaNet configs lower gamma to 5e-4, the
    ``"fgd-retinanet"`` preset of :class:`hcam_ops.nn.FGDLoss`), with the DistillBEV-only terms (``channel_weight``,
    ``spatial_weight``, ``fp_weight``) off; ``spatial_student_ratio``,
    ``spatial_mask`` and ``channel_mask`` default to DistillBEV's config.

    Args:
        student: ``[B, C, H, W]``, already mapped to the teacher's channels.
        teacher: ``[B, C, H, W]``, on the student's device; gets no gradient.
        fg_mask, bg_mask: ``[B, H, W]`` or ``[B, 1, H, W]`` per-cell weights
            (see :func:`hcam_ops.fgd_masks_from_boxes`); no gradient.
        spatial_temperature, channel_temperature: ``T_s``, ``T_c`` (> 0).
        fg_weight, bg_weight, attention_weight, channel_weight, spatial_weight:
            the term weights (FGD's alpha, beta, gamma; DistillBEV's channel
            and spatial pooled terms).
        spatial_attention: the spatial weight ``W_s`` of the masked errors:
            ``"teacher"``: ``A_s(T)`` (FGD, and DistillBEV's default);
            ``"student_mix"``: ``(A_s(T) + r A_s(S)) / (1 + r)`` with the
            student part detached and the channel weight left ``A_c(T)``
            (DistillBEV's ``"teacher_student"``);
            ``"combined"``: ``sqrt(A_s(T) A_s(S))`` with the student part
            detached (ours, neither FGD's nor DistillBEV's).
        spatial_student_ratio: ``r`` of ``"student_mix"`` (>= 0; DistillBEV's 1.0).
        spatial_mask, channel_mask: DistillBEV's switches: off, the fg and bg
            errors are weighted by 1 instead of ``W_s`` (resp. ``A_c(T)``).
            The fp term keeps both weights, and ``loss_spatial`` /
            ``loss_channel`` are not switched off with them (set their weights
            to 0 for that, as DistillBEV's code does).
        fp_mask: ``[B, H, W]`` or ``[B, 1, H, W]`` per-cell weights of
            DistillBEV's false-positive term (its ``fp_mask * fp_scale_mask``),
            or ``None`` for none; no gradient.
        fp_weight: that term's weight (DistillBEV's ``fp_weight``).
        check_finite: raise ``ValueError`` when the loss is not finite, which
            is what NaN or Inf in an input produce, naming the inputs that hold
            them (one device sync on CUDA, more only on that error; skipped
            under ``torch.compile``, where NaN propagates).

    Returns:
        ``{"loss_fg", "loss_bg", "loss_attention", "loss_channel",
        "loss_spatial", "loss_fp"}``: scalar tensors in the maps' (common)
        dtype, each divided by ``B``; an empty batch gives zeros, no fp mask
        a zero ``loss_fp``. Non-contiguous (e.g. channels-last) maps are
        copied once to ``[B, C, H, W]`` contiguous.

    Mixed dtypes (e.g. a bfloat16 student under autocast with a float32
    teacher) are promoted to their common dtype (``torch.promote_types``)
    before the kernel, with or without autocast: the terms are in that dtype
    and the student's gradient in its own dtype. The masks do not take part
    (any float dtype; the kernel reads them in its float32 accumulation, or
    float64 for float64 maps).
    """
    weights = {
        "fg_weight": fg_weight,
        "bg_weight": bg_weight,
        "attention_weight": attention_weight,
        "channel_weight": channel_weight,
        "spatial_weight": spatial_weight,
        "fp_weight": fp_weight,
    }
    switches = {"spatial_mask": spatial_mask, "channel_mask": channel_mask}
    _check(
        student,
        teacher,
        spatial_temperature,
        channel_temperature,
        weights,
        spatial_attention,
        spatial_student_ratio,
        switches,
    )
    student, teacher = _checks.promote_floats(_OP, {"student": student, "teacher": teacher})
    fg = _as_mask(fg_mask, student, "fg_mask")
    bg = _as_mask(bg_mask, student, "bg_mask")
    fp = None if fp_mask is None else _as_mask(fp_mask, student, "fp_mask").detach()
    terms, _, _, _ = torch.ops.hcam_ops.fgd_loss(
        student,
        teacher.detach(),
        fg.detach(),
        bg.detach(),
        fp,
        float(spatial_temperature),
        float(channel_temperature),
        [float(w) for w in weights.values()],
        SPATIAL_ATTENTION.index(spatial_attention),
        float(spatial_student_ratio),
        spatial_mask,
        channel_mask,
    )
    if check_finite and not torch.compiler.is_compiling() and student.device.type != "meta":
        if not bool(torch.isfinite(terms).all()):
            # The error path only: name the input that holds NaN or Inf.
            inputs = {"student": student, "teacher": teacher, "fg_mask": fg, "bg_mask": bg, "fp_mask": fp}
            bad = [name for name, t in inputs.items() if t is not None and not bool(torch.isfinite(t).all())]
            why = (
                f"{' and '.join(bad)} hold{'s' if len(bad) == 1 else ''} NaN or Inf"
                if bad
                else "the maps overflow their dtype"
            )
            raise ValueError(f"{_OP}: the loss is not finite: {why}")
    return dict(zip(TERMS, terms.unbind(0)))
