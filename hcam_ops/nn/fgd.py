"""FGDLoss: FGD and DistillBEV feature distillation as published
(docs/ops/fgd.md#fgdloss), per level around the fused hcam_ops.fgd_loss.

One :class:`FGDLevel` per feature level holds the learnable parts with the
published FGD ``FeatureLoss`` names (``align``, ``conv_mask_s``,
``conv_mask_t``, ``channel_add_conv_s``, ``channel_add_conv_t``) plus
DistillBEV's teacher adaptation and 3x3 spatial adaptation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..distill.adapters import student_adaptation, teacher_adaptation
from ..distill.false_positives import FP_SCALE_MODES, false_positive_masks
from ..distill.gaussian_foreground import FOREGROUND_VARIANTS, RADIUS_FUNCS, foreground_variant, gaussian_foreground
from ..distill.regions import region_weights
from ..ops import _checks
from ..ops.bev_masks import BACKGROUNDS, bev_masks_from_boxes
from ..ops.fgd_loss import SPATIAL_ATTENTION, fgd_loss
from ..ops.fgd_masks import fgd_masks_from_boxes
from ..reference.fgd_loss import attention
from .gc_block import channel_add, global_context, init_context_mask

MASKS = ("fgd", "bev")
SCALE_MASKS = ("combine_gt", "separate_gt", "combine_extend", "separate_extend", "bg_only", "none")
FOREGROUND_MASKS = ("gt", *FOREGROUND_VARIANTS)
# DistillBEV's name of the student mix.
_SPATIAL_ALIASES = {"teacher_student": "student_mix"}

# FGD: the class defaults of the published FeatureLoss, then the published
# configs' values for RetinaNet and FCOS. DistillBEV: its main published
# config (CenterPoint -> BEVDepth4D), which leaves the FP term and the
# multi-scale levels off (turn them on with overrides).
_FGD = dict(
    spatial_temperature=0.5,
    channel_temperature=0.5,
    fg_weight=1e-3,
    bg_weight=5e-4,
    attention_weight=1e-3,
    global_weight=5e-6,
)
PRESETS = {
    "fgd": _FGD,
    "fgd-retinanet": {**_FGD, "attention_weight": 5e-4},
    "fgd-fcos": dict(
        spatial_temperature=0.8,
        channel_temperature=0.8,
        fg_weight=1.6e-3,
        bg_weight=8e-4,
        attention_weight=8e-4,
        global_weight=8e-6,
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
        spatial_attention="teacher",
        spatial_student_ratio=1.0,
        spatial_adapter=True,
        student_adaptation="1x1conv",
        teacher_adaptation="identity",
        masks="bev",
        scale_mask="combine_gt",
        fp_weight=0.0,
        fp_scale_mode="dfs",
    ),
}


def _levels(x) -> list:
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _at(x, level: int):
    """One level's entry of a per-level list, or the tensor given for all levels."""
    return x[level] if isinstance(x, (list, tuple)) else x


def boxes_on_pixel_grid(boxes, img_shape, feat_shape):
    """2-D boxes ``(x1, y1, x2, y2)`` in pixels as BEV boxes ``(x, y, dx, dy,
    yaw=0)`` on a grid whose cells are ``img / feat`` pixels, from (0, 0):
    how DistillBEV's masks apply to an image detector."""
    if isinstance(img_shape, torch.Tensor):
        img_shape = img_shape.reshape(-1, 2)[0].tolist()
    img_h, img_w = (float(v) for v in (img_shape[0] if isinstance(img_shape[0], (tuple, list)) else img_shape))
    H, W = feat_shape
    out = []
    for i, b in enumerate(boxes):
        if not isinstance(b, torch.Tensor) or b.dim() != 2 or b.shape[1] != 4:
            shape = tuple(b.shape) if isinstance(b, torch.Tensor) else type(b).__name__
            raise ValueError(f"FGDLoss: boxes[{i}] must be [n, 4] (x1, y1, x2, y2), got {shape}")
        b = b.detach()
        centre, size = (b[:, :2] + b[:, 2:]) / 2, b[:, 2:] - b[:, :2]
        out.append(torch.cat([centre, size, torch.zeros_like(size[:, :1])], dim=1))
    return out, (0.0, 0.0), (img_w / W, img_h / H)


def _extend_scale(scale):
    if scale is None:
        raise ValueError("FGDLoss: scale_mask '*_extend' needs a Gaussian foreground_mask")
    return scale


def _per_level(value, n: int, name: str) -> list[float]:
    """A weight given once or once per level (as DistillBEV's ``w[i] if len(w) > 1 else w[0]``)."""
    values = [float(v) for v in _levels(value)]
    if len(values) == 1:
        values = values * n
    if len(values) != n:
        raise ValueError(f"FGDLoss: {name} has {len(values)} values for {n} levels")
    for v in values:
        if not math.isfinite(v):
            raise ValueError(f"FGDLoss: {name} must be finite, got {v}")
    return values


class FGDLevel(nn.Module):
    """The learnable parts of one level. ``align``: the student adaptation
    (FGD's name; DistillBEV's ``channel_wise_adaptations[i]``);
    ``teacher_adaptation``; ``spatial_adaptation``: DistillBEV's 3x3 conv
    ``G`` on the student's channel mean; ``conv_mask_s/_t`` and
    ``channel_add_conv_s/_t``: FGD's two GcBlocks, one for the student and
    one for the teacher, built when the global term is on.

    The published ``FeatureLoss`` builds the GcBlocks whatever its
    ``lambda_fgd``. Without the global term this level has none (parameters
    that no loss reaches would stall DDP), and loading a state dict drops the
    GcBlock entries it holds (``GC_BLOCK_KEYS``), so a published checkpoint
    loads strictly in every configuration; with the term on, they load as
    usual."""

    GC_BLOCK_KEYS = ("conv_mask_s.", "conv_mask_t.", "channel_add_conv_s.", "channel_add_conv_t.")

    def __init__(
        self,
        student_channels: int,
        teacher_channels: int,
        *,
        student_kind: str,
        teacher_kind: str,
        upsample_factor: int,
        teacher_stride: int,
        spatial_adapter: bool,
        global_block: bool,
    ):
        super().__init__()
        align = student_adaptation(student_kind, student_channels, teacher_channels, upsample_factor)
        # FGD's state dict has no ``align`` where the channels agree.
        self.align = None if isinstance(align, nn.Identity) else align
        self.student_stride = align.grid_stride
        self.teacher_adaptation = teacher_adaptation(teacher_kind, teacher_stride)
        self.spatial_adaptation = nn.Conv2d(1, 1, kernel_size=3, padding=1) if spatial_adapter else None
        if global_block:
            self.conv_mask_s = nn.Conv2d(teacher_channels, 1, kernel_size=1)
            self.conv_mask_t = nn.Conv2d(teacher_channels, 1, kernel_size=1)
            self.channel_add_conv_s = channel_add(teacher_channels)
            self.channel_add_conv_t = channel_add(teacher_channels)
            for conv in (self.conv_mask_s, self.conv_mask_t):
                init_context_mask(conv)
        self.has_global = global_block
        self._register_load_state_dict_pre_hook(self._drop_unused_gc_blocks)

    def _drop_unused_gc_blocks(self, state_dict, prefix, *args):
        if self.has_global:
            return
        for key in [k for k in state_dict if k.startswith(prefix)]:
            if key[len(prefix) :].startswith(self.GC_BLOCK_KEYS):
                del state_dict[key]

    def adapt(self, student: torch.Tensor, teacher: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = student if self.align is None else self.align(student)
        t = self.teacher_adaptation(teacher.detach())
        if s.shape[-2:] != t.shape[-2:]:
            raise ValueError(
                f"FGDLoss: after the adaptations the student map is {tuple(s.shape[-2:])} and the teacher map "
                f"{tuple(t.shape[-2:])}: give maps of one size, or a student upsample_factor / teacher stride that "
                f"makes them meet (student {tuple(student.shape[-2:])} x {1 / self.student_stride:g}, "
                f"teacher {tuple(teacher.shape[-2:])} / {self.teacher_adaptation.grid_stride:g})"
            )
        return s, t

    def relation(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """FGD's relation loss before weighting: ``sum (R_s(S) - R_t(T))^2``.
        Both blocks learn from it (as published); the teacher map itself is
        detached."""
        out_s = student + self.channel_add_conv_s(global_context(student, self.conv_mask_s))
        out_t = teacher + self.channel_add_conv_t(global_context(teacher, self.conv_mask_t))
        return ((out_s - out_t) ** 2).sum()


class FGDLoss(nn.Module):
    """Focal and global feature distillation (FGD) and DistillBEV over one or
    more feature levels. Every default is the published FGD ``FeatureLoss``'s;
    :meth:`from_preset` gives the published configs (``"fgd"``,
    ``"fgd-retinanet"``, ``"fgd-fcos"``, ``"distillbev"``).

    Args:
        student_channels, teacher_channels: an int or one per level.
        spatial_temperature, channel_temperature, fg_weight, bg_weight,
        attention_weight, channel_weight, spatial_weight, spatial_attention,
        spatial_student_ratio, spatial_mask, channel_mask: as
            :func:`hcam_ops.fgd_loss`; each weight may be one value or one
            per level (DistillBEV's per-level weights).
        global_weight: FGD's relation term (two GcBlocks per level); 0 builds none.
        spatial_adapter: DistillBEV's learnable 3x3 conv ``G`` on the
            student's channel mean in ``loss_spatial`` (else the identity,
            inside the fused op).
        student_adaptation, upsample_factor, teacher_adaptation,
        teacher_stride: see :mod:`hcam_ops.distill.adapters`.
        masks: ``"fgd"`` (FGD's rectangles, :func:`hcam_ops.fgd_masks_from_boxes`)
            or ``"bev"`` (DistillBEV's rotated boxes on a BEV grid,
            :func:`hcam_ops.bev_masks_from_boxes`; 2-D boxes are boxes with
            yaw 0 on the pixel grid).
        scale_mask, background_mask, bg_extend_length, bg_extend_weight:
            DistillBEV's mask scaling and background (``"bev"`` masks only).
        foreground_mask, gauss_fg_weight, min_radius, gaussian_overlap,
        radius_func: DistillBEV's Gaussian foreground variants
            (:mod:`hcam_ops.distill.gaussian_foreground`); ``"gt"``: the boxes.
        fp_weight, output_threshold, groundtruth_threshold, fp_scale_mode,
        fp_epoch: DistillBEV's false-positive term
            (:func:`hcam_ops.distill.false_positive_masks`), on from epoch
            ``fp_epoch`` when ``fp_weight > 0`` and heatmaps are given.
        multi_scale_epoch: before this epoch only the first level is
            distilled (DistillBEV's head level); -1: all levels always.
        region_weights, region_threshold: ours: per-region weights
            (``tp``/``fp``/``fn``/``tn``) on both masks.

    ``forward(student, teacher, *, boxes=None, img_shape=None, fg_mask=None,
    bg_mask=None, bev_boxes=None, bev_grid=None, teacher_heatmap=None,
    gt_heatmap=None, check_finite=True)``: maps (or lists of maps, one per
    level); returns the terms summed over levels, each a 0-d tensor.
    ``bev_grid=(pc_range, cell_size)``; ``cell_size=None`` gives each level
    cells spanning the 6-number ``pc_range``.
    """

    def __init__(
        self,
        student_channels: int | Sequence[int],
        teacher_channels: int | Sequence[int],
        *,
        spatial_temperature: float = 0.5,
        channel_temperature: float = 0.5,
        fg_weight: float | Sequence[float] = 1e-3,
        bg_weight: float | Sequence[float] = 5e-4,
        attention_weight: float | Sequence[float] = 1e-3,
        global_weight: float | Sequence[float] = 5e-6,
        channel_weight: float | Sequence[float] = 0.0,
        spatial_weight: float | Sequence[float] = 0.0,
        spatial_attention: str = "teacher",
        spatial_student_ratio: float = 1.0,
        spatial_mask: bool = True,
        channel_mask: bool = True,
        spatial_adapter: bool = False,
        student_adaptation: str = "auto",
        upsample_factor: int = 4,
        teacher_adaptation: str = "identity",
        teacher_stride: int = 4,
        masks: str = "fgd",
        scale_mask: str = "combine_gt",
        background_mask: str = "logical_not",
        foreground_mask: str = "gt",
        gauss_fg_weight: float = -1e10,
        min_radius: int = 2,
        gaussian_overlap: float = 0.1,
        radius_func: str = "gaussian_radius",
        bg_extend_length: float = 0.0,
        bg_extend_weight: float = 0.0,
        fp_weight: float = 0.0,
        output_threshold: float = 0.1,
        groundtruth_threshold: float | None = None,
        fp_scale_mode: str = "average",
        fp_epoch: int = 0,
        multi_scale_epoch: int = -1,
        region_weights: dict[str, float] | None = None,
        region_threshold: float = 0.1,
    ):
        super().__init__()
        s_ch, t_ch = _levels(student_channels), _levels(teacher_channels)
        if len(s_ch) != len(t_ch):
            raise ValueError(f"FGDLoss: {len(s_ch)} student levels but {len(t_ch)} teacher levels")
        n = self.num_levels = len(s_ch)
        if masks not in MASKS:
            raise ValueError(f"FGDLoss: masks must be one of {MASKS}, got {masks!r}")
        spatial_attention = _SPATIAL_ALIASES.get(spatial_attention, spatial_attention)
        for name, value, choices in (
            ("scale_mask", scale_mask, SCALE_MASKS),
            ("background_mask", background_mask, BACKGROUNDS),
            ("foreground_mask", foreground_mask, FOREGROUND_MASKS),
            ("radius_func", radius_func, tuple(RADIUS_FUNCS)),
            ("spatial_attention", spatial_attention, SPATIAL_ATTENTION),
            ("fp_scale_mode", fp_scale_mode, FP_SCALE_MODES),
        ):
            _checks.check_choice(value, choices, "FGDLoss", name)
        if masks == "fgd" and (scale_mask, foreground_mask) != ("combine_gt", "gt"):
            raise ValueError("FGDLoss: scale_mask and foreground_mask are options of masks='bev'")
        _checks.check_temperature(spatial_temperature, "FGDLoss", "spatial_temperature")
        _checks.check_temperature(channel_temperature, "FGDLoss", "channel_temperature")
        for name, value in (
            ("fp_weight", fp_weight),
            ("spatial_student_ratio", spatial_student_ratio),
            ("bg_extend_length", bg_extend_length),
            ("bg_extend_weight", bg_extend_weight),
            ("gaussian_overlap", gaussian_overlap),
        ):
            if not (math.isfinite(float(value)) and float(value) >= 0):
                raise ValueError(f"FGDLoss: {name} must be finite and >= 0, got {value}")
        for name, value in (("output_threshold", output_threshold), ("groundtruth_threshold", groundtruth_threshold)):
            if value is not None and not math.isfinite(float(value)):
                raise ValueError(f"FGDLoss: {name} must be finite, got {value}")
        self.weights = {
            name: _per_level(value, n, name)
            for name, value in (
                ("fg_weight", fg_weight),
                ("bg_weight", bg_weight),
                ("attention_weight", attention_weight),
                ("global_weight", global_weight),
                ("channel_weight", channel_weight if channel_mask else 0.0),
                ("spatial_weight", spatial_weight if spatial_mask else 0.0),
            )
        }
        self.op_kwargs = dict(
            spatial_temperature=spatial_temperature,
            channel_temperature=channel_temperature,
            spatial_attention=spatial_attention,
            spatial_student_ratio=spatial_student_ratio,
            spatial_mask=spatial_mask,
            channel_mask=channel_mask,
        )
        self.masks, self.scale_mask, self.background_mask = masks, scale_mask, background_mask
        self.foreground_mask, self.gauss_fg_weight = foreground_mask, float(gauss_fg_weight)
        self.gaussian = dict(min_radius=int(min_radius), gaussian_overlap=float(gaussian_overlap), radius=radius_func)
        self.bg_extend = (float(bg_extend_length), float(bg_extend_weight))
        self.fp = dict(
            output_threshold=output_threshold, groundtruth_threshold=groundtruth_threshold, scale_mode=fp_scale_mode
        )
        self.fp_weight, self.fp_epoch = float(fp_weight), int(fp_epoch)
        self.multi_scale_epoch = int(multi_scale_epoch)
        self.region_weights, self.region_threshold = region_weights, region_threshold
        self.epoch = 0
        use_spatial_adapter = spatial_adapter and spatial_mask
        self.levels = nn.ModuleList(
            FGDLevel(
                s,
                t,
                student_kind=student_adaptation,
                teacher_kind=teacher_adaptation,
                upsample_factor=upsample_factor,
                teacher_stride=teacher_stride,
                spatial_adapter=use_spatial_adapter,
                global_block=self.weights["global_weight"][i] > 0,
            )
            for i, (s, t) in enumerate(zip(s_ch, t_ch))
        )

    @classmethod
    def from_preset(cls, name: str, student_channels, teacher_channels, **overrides) -> FGDLoss:
        """A published configuration (:data:`PRESETS`); any keyword overrides one."""
        if name not in PRESETS:
            raise ValueError(f"FGDLoss.from_preset: unknown preset {name!r}; one of {sorted(PRESETS)}")
        return cls(student_channels, teacher_channels, **{**PRESETS[name], **overrides})

    def set_epoch(self, epoch: int) -> None:
        """The 0-based training epoch (``fp_epoch``, ``multi_scale_epoch``), as
        DistillBEV's runner sets it at the start of every epoch."""
        self.epoch = int(epoch)

    # -- masks ---------------------------------------------------------------------------------------------

    def _fp(self, level, kw, foreground):
        """DistillBEV's FP cells and their scale (``None, None`` while the term is off)."""
        if not (self.fp_weight > 0 and self.epoch >= self.fp_epoch):
            return None, None
        heat_t, heat_g = kw.get("teacher_heatmap"), kw.get("gt_heatmap")
        if heat_t is None or heat_g is None:
            raise ValueError("FGDLoss: fp_weight > 0 needs teacher_heatmap and gt_heatmap")
        return false_positive_masks(_at(heat_t, level), _at(heat_g, level), foreground, **self.fp)

    def _fgd_masks(self, level, shape, kw, check):
        """FGD's rectangles (or the given masks); with the FP term (ours on FGD
        masks) FP cells leave the background, which is normalised again."""
        fg_mask, bg_mask = kw.get("fg_mask"), kw.get("bg_mask")
        if fg_mask is not None or bg_mask is not None:
            if fg_mask is None or bg_mask is None:
                raise ValueError("FGDLoss: give both fg_mask and bg_mask, or boxes")
            fg, bg = _levels(fg_mask), _levels(bg_mask)
            if len(fg) != self.num_levels or len(bg) != self.num_levels:
                raise ValueError(f"FGDLoss: masks for {len(fg)} levels, model has {self.num_levels}")
            return fg[level], bg[level], None
        boxes, img_shape = kw.get("boxes"), kw.get("img_shape")
        if boxes is None or img_shape is None:
            raise ValueError("FGDLoss: needs boxes and img_shape, or fg_mask and bg_mask")
        fg, bg = fgd_masks_from_boxes(boxes, img_shape, shape, check_boxes=check)
        fp, fp_scale = self._fp(level, kw, fg)
        if fp is None:
            return fg, bg, None
        keep = (bg > 0) & (fp == 0)
        bg = keep.to(bg.dtype) / keep.sum((1, 2), keepdim=True).clamp(min=1).to(bg.dtype)
        return fg, bg, fp * fp_scale

    def _bev_boxes(self, level, shape, kw):
        if kw.get("bev_boxes") is not None:
            if kw.get("bev_grid") is None:
                raise ValueError("FGDLoss: bev_boxes need bev_grid=(pc_range, cell_size)")
            pc_range, cell = kw["bev_grid"]
            if cell is None:
                # As published (osf = grid_size // W): each level's cells span the range.
                r = [float(v) for v in (pc_range.tolist() if isinstance(pc_range, torch.Tensor) else pc_range)]
                if len(r) != 6:
                    raise ValueError("FGDLoss: bev_grid=(pc_range, None) needs the 6-number point-cloud range")
                cell = ((r[3] - r[0]) / shape[1], (r[4] - r[1]) / shape[0])
            elif isinstance(cell, list):
                cell = _at(cell, level) if len(cell) == self.num_levels else cell
            return kw["bev_boxes"], pc_range, cell
        if kw.get("boxes") is None or kw.get("img_shape") is None:
            raise ValueError("FGDLoss: needs boxes and img_shape, bev_boxes and bev_grid, or fg_mask and bg_mask")
        return boxes_on_pixel_grid(kw["boxes"], kw["img_shape"], shape)

    def _bev_masks(self, level, shape, kw, check):
        """DistillBEV's masks in the published order: the box foreground and its
        scale (the op), the Gaussian foreground variant, the background, the FP
        cells leaving it (its scale recomputed), then ``scale_mask``."""
        boxes, pc_range, cell = self._bev_boxes(level, shape, kw)
        length, weight = self.bg_extend
        args = (boxes, pc_range, cell, shape)
        extend = dict(bg_extend_length=length, bg_extend_weight=weight)
        gt_fg, _ = bev_masks_from_boxes(*args, scale_mask="none", check_boxes=check, **extend)
        scaled, _ = bev_masks_from_boxes(*args, scale_mask="separate", check_boxes=False, **extend)
        fg_scale = torch.where(gt_fg > 0, scaled / gt_fg.clamp(min=1e-30), torch.zeros_like(scaled))
        B, H, W = gt_fg.shape
        n_bg = H * W - (gt_fg != 0).sum((1, 2), keepdim=True).to(gt_fg.dtype)
        scale2 = None
        if self.foreground_mask == "gt":
            foreground = gt_fg
        else:
            heat, scale2 = gaussian_foreground(*args, **self.gaussian)
            foreground = foreground_variant(
                self.foreground_mask,
                gt_fg,
                heat.to(gt_fg.dtype),
                gauss_fg_weight=self.gauss_fg_weight,
                fg_weight=self.weights["fg_weight"][level],
                bg_weight=self.weights["bg_weight"][level],
            )
            scale2 = scale2.to(gt_fg.dtype)
        bg = (foreground == 0).to(gt_fg.dtype) if self.background_mask == "logical_not" else 1 - foreground
        fp, fp_scale = self._fp(level, kw, foreground)
        if fp is not None:
            fp = fp.to(gt_fg.dtype)
            bg = bg * (fp == 0)
            n_bg = H * W - foreground.sum((1, 2), keepdim=True) - fp.sum((1, 2), keepdim=True)
        bg_scale = torch.where(n_bg > 0, 1.0 / n_bg.clamp(min=1e-30), torch.zeros_like(n_bg)).expand(B, H, W)
        mode = self.scale_mask
        if mode in ("combine_gt", "combine_extend"):
            s = torch.maximum(fg_scale if mode == "combine_gt" else _extend_scale(scale2), bg_scale)
            fg, bg = foreground * s, bg * s
        elif mode == "separate_gt":
            fg, bg = foreground * fg_scale, bg * bg_scale
        elif mode == "separate_extend":
            fg, bg = foreground * _extend_scale(scale2), bg * bg_scale
        elif mode == "bg_only":
            fg, bg = foreground * bg_scale, bg * bg_scale
        else:
            fg = foreground
        return fg, bg, None if fp is None else fp * fp_scale.to(fp.dtype)

    def _level_masks(self, level, shape, kw, check=True):
        """``(fg, bg, fp)`` per-cell weights ``[B, H, W]`` for one level (``fp`` may be ``None``)."""
        given = kw.get("fg_mask") is not None or kw.get("bg_mask") is not None
        if self.masks == "bev" and not given:
            fg, bg, fp = self._bev_masks(level, shape, kw, check)
        else:
            fg, bg, fp = self._fgd_masks(level, shape, kw, check)
        heat_t, heat_g = kw.get("teacher_heatmap"), kw.get("gt_heatmap")
        if self.region_weights is not None and heat_t is not None and heat_g is not None:
            r = region_weights(_at(heat_t, level), _at(heat_g, level), self.region_threshold, self.region_weights)
            r = F.interpolate(r[:, None], size=shape, mode="nearest")[:, 0].to(fg.dtype)
            B = r.shape[0]
            fg, bg = fg.reshape(B, *shape) * r, bg.reshape(B, *shape) * r
        return fg, bg, fp

    # -- forward -------------------------------------------------------------------------------------------

    def _active(self, level: int) -> bool:
        return level == 0 or self.multi_scale_epoch < 0 or self.epoch >= self.multi_scale_epoch

    def _pairs(self, student, teacher):
        students, teachers = _levels(student), _levels(teacher)
        if len(students) != self.num_levels or len(teachers) != self.num_levels:
            raise ValueError(
                f"FGDLoss: got {len(students)} student and {len(teachers)} teacher maps for {self.num_levels} levels"
            )
        return students, teachers

    def forward(self, student, teacher, *, check_finite: bool = True, **kw) -> dict[str, torch.Tensor]:
        """The terms summed over levels. The boxes are checked once (first
        level) and the totals once (``check_finite``), not per level: each
        check is a device sync on CUDA."""
        students, teachers = self._pairs(student, teacher)
        totals: dict[str, torch.Tensor] = {}
        idle = []
        for i, (s_in, t_in) in enumerate(zip(students, teachers)):
            block = self.levels[i]
            if not self._active(i):
                idle.append(block)
                continue
            s, t = block.adapt(s_in, t_in)
            B, _, H, W = t.shape
            fg, bg, fp = self._level_masks(i, (H, W), kw, check=not totals)
            w = {k: v[i] for k, v in self.weights.items()}
            inner_spatial = 0.0 if block.spatial_adaptation is not None else w["spatial_weight"]
            terms = fgd_loss(
                s,
                t,
                fg,
                bg,
                fg_weight=w["fg_weight"],
                bg_weight=w["bg_weight"],
                attention_weight=w["attention_weight"],
                channel_weight=w["channel_weight"],
                spatial_weight=inner_spatial,
                fp_mask=fp,
                fp_weight=self.fp_weight if fp is not None else 0.0,
                check_finite=False,
                **self.op_kwargs,
            )
            if block.spatial_adaptation is not None:
                pooled = block.spatial_adaptation(s.mean(1, keepdim=True))
                terms["loss_spatial"] = w["spatial_weight"] * (t.mean(1, keepdim=True) - pooled).abs().sum() / max(B, 1)
            if block.has_global:
                terms["loss_global"] = w["global_weight"] * block.relation(s, t) / max(B, 1)
            for k, v in terms.items():
                totals[k] = totals[k] + v if k in totals else v
        if idle and totals:
            # Levels before multi_scale_epoch take part with weight 0, so DDP
            # finds a gradient (zero) for every parameter.
            totals["loss_fg"] = totals["loss_fg"] + 0.0 * sum(p.sum() for b in idle for p in b.parameters())
        if check_finite and totals and not torch.compiler.is_compiling():
            if not bool(torch.isfinite(torch.stack([v.detach().float() for v in totals.values()])).all()):
                bad = [k for k, v in totals.items() if not bool(torch.isfinite(v.detach()))]
                raise ValueError(f"FGDLoss: {', '.join(bad)} not finite: student or teacher maps hold NaN or Inf")
        return totals

    @torch.no_grad()
    def maps(self, student, teacher, **kw) -> list[dict[str, torch.Tensor]]:
        """What each level distils, for looking at it: ``[B, H, W]`` maps
        ``fg``, ``bg``, ``fp`` (zeros without the FP term),
        ``teacher_attention`` and ``student_attention`` (``A_s`` of the
        adapted maps), on the adapted grid."""
        students, teachers = self._pairs(student, teacher)
        out = []
        for i, (s_in, t_in) in enumerate(zip(students, teachers)):
            s, t = self.levels[i].adapt(s_in, t_in)
            B, _, H, W = t.shape
            fg, bg, fp = self._level_masks(i, (H, W), kw)
            ts, tc = self.op_kwargs["spatial_temperature"], self.op_kwargs["channel_temperature"]
            a_t, _ = attention(t.float(), ts, tc)
            a_s, _ = attention(s.float(), ts, tc)
            out.append(
                {
                    "fg": fg.reshape(B, H, W).float(),
                    "bg": bg.reshape(B, H, W).float(),
                    "fp": torch.zeros(B, H, W, device=t.device) if fp is None else fp.reshape(B, H, W).float(),
                    "teacher_attention": a_t,
                    "student_attention": a_s,
                }
            )
        return out


__all__ = ["FGDLevel", "FGDLoss", "MASKS", "PRESETS", "SCALE_MASKS"]
