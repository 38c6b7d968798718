"""One feature level of FGDLoss: its learnable parts, with the published FGD
``FeatureLoss`` names and DistillBEV's adaptations."""

from __future__ import annotations

import torch
from torch import nn

from ..distill.adapters import student_adaptation, teacher_adaptation
from .gc_block import channel_add, global_context, init_context_mask


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
