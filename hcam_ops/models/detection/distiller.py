"""The Distiller: a student detector trained against a frozen teacher's FPN
features with :class:`hcam_ops.nn.FGDLoss` (FGD, or DistillBEV's terms),
registered with timm beside its class as ``hcam_distiller``."""

from __future__ import annotations

import math

import torch
from timm.models import register_model
from torch import nn

from ...distill import centernet_heatmaps
from ...distill.auto_weight import AutoDistillWeight
from ...nn import FGDLoss
from ...nn.fgd_presets import presets, uses_heatmaps
from .._factory import TIMM_KEYS, refuse_pretrained
from .builders import build_detector, family
from .features import NUM_LEVELS, FeatureTap, check_fpn, score_maps

DISTILLER_NAME = "hcam_distiller"


class Distiller(nn.Module):
    """``student`` (trained), ``teacher`` (frozen: no gradients, always in
    eval mode, left out of the optimizer since its parameters do not require
    grad) and ``distill_loss`` (an FGDLoss over the P3-P7 levels).

    In training mode ``forward(images, targets)`` returns the student's
    detection losses plus the FGD terms times ``distill_weight``; in eval
    mode the student's detections. ``distill_weight="auto"`` (ours,
    :class:`hcam_ops.distill.AutoDistillWeight`): one factor set from the
    first ``auto_batches`` training batches so that the largest term
    matches the detection loss, then frozen."""

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        preset: str = "fgd",
        distill_weight: float | str = 1.0,
        loss_overrides: dict | None = None,
        auto_batches: int = 10,
    ):
        super().__init__()
        if preset not in presets():
            raise ValueError(f"preset {preset!r}: one of {', '.join(presets())}")
        self.auto_weight = None
        if distill_weight == "auto":
            self.auto_weight = AutoDistillWeight(auto_batches)
            distill_weight = 1.0
        elif isinstance(distill_weight, str) or not math.isfinite(float(distill_weight)) or distill_weight < 0:
            raise ValueError(f"distill_weight must be 'auto' or a finite number >= 0, got {distill_weight!r}")
        check_fpn(student, "student")
        check_fpn(teacher, "teacher")
        self.student, self.teacher = student, teacher
        self.preset, self.distill_weight = preset, float(distill_weight)
        self.heatmaps = uses_heatmaps(preset, loss_overrides)
        channels = [student.backbone.out_channels] * NUM_LEVELS
        self.distill_loss = FGDLoss.from_preset(
            preset,
            student_channels=channels,
            teacher_channels=[teacher.backbone.out_channels] * NUM_LEVELS,
            **(loss_overrides or {}),
        )
        freeze_batchnorm(self.teacher)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.teacher.eval()
        self._tap = FeatureTap(student)
        self._batch = None
        student.transform.register_forward_hook(self._record_batch)

    @classmethod
    def from_config(
        cls,
        student: dict,
        teacher: dict,
        preset: str = "fgd",
        distill_weight: float | str = 1.0,
        loss_overrides: dict | None = None,
        auto_batches: int = 10,
    ) -> Distiller:
        s = build_detector(student["name"], **student["config"])
        t = build_detector(teacher["name"], **teacher["config"])
        if family(student["name"]) != family(teacher["name"]):
            raise ValueError(f"student {student['name']} and teacher {teacher['name']}: not the same head family")
        return cls(s, t, preset, distill_weight, loss_overrides, auto_batches)

    def _record_batch(self, module, inputs, output) -> None:
        self._batch = output  # (ImageList, targets resized as the detector saw them)

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()
        return self

    def forward(self, images, targets=None):
        if not self.training:
            return self.student(images)
        losses = self.student(images, targets)
        image_list, seen = self._batch
        self._batch = None
        students = self._tap.take()
        detection = sum(losses.values()) if self.auto_weight is not None else None
        parts = self.distill_terms(image_list.tensors, seen, students, image_list.image_sizes, detection)
        return {**losses, **parts}

    @torch.no_grad()
    def teacher_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The teacher's FPN levels on the batched input the student saw (both
        detectors normalise and size alike: built with the same sizes)."""
        return list(self.teacher.backbone(x).values())

    def fgd_kwargs(
        self,
        x: torch.Tensor,
        targets: list[dict],
        teachers: list[torch.Tensor],
        image_sizes: list[tuple[int, int]] | None = None,
    ) -> dict:
        """The keywords of FGDLoss.forward (and FGDLoss.maps): boxes in pixels of
        ``x``; ``img_shape``: each image's ``(h, w)`` before padding
        (``image_sizes``, torchvision's ``ImageList.image_sizes``; default: the
        padded ``x``'s size for every image), as published FGD passes
        ``img_metas[i]['img_shape']`` while the feature maps cover the padded
        batch. With heatmaps (a false-positive term or region weights): the
        teacher's score maps and the ground-truth CenterNet heatmaps, one
        ``[B, H_l, W_l]`` per level, on the padded grid of the feature maps."""
        padded = tuple(int(v) for v in x.shape[-2:])
        sizes = [tuple(int(v) for v in s) for s in image_sizes] if image_sizes is not None else None
        boxes = [t["boxes"].float() for t in targets]
        kwargs = {"boxes": boxes, "img_shape": sizes or [padded] * len(boxes)}
        if self.heatmaps:
            with torch.no_grad():
                kwargs["teacher_heatmap"] = score_maps(self.teacher, teachers)
            labels = [t["labels"] for t in targets]
            K = self.student.head.classification_head.num_classes
            kwargs["gt_heatmap"] = [
                centernet_heatmaps(boxes, labels, K, padded, tuple(f.shape[-2:])).amax(1) for f in teachers
            ]
        return kwargs

    def distill_terms(
        self,
        x: torch.Tensor,
        targets: list[dict],
        students: list[torch.Tensor],
        image_sizes: list[tuple[int, int]] | None = None,
        detection_loss: torch.Tensor | None = None,
    ) -> dict:
        """The weighted FGD terms. With ``distill_weight="auto"`` and the
        batch's ``detection_loss`` (a training step) the batch also updates the
        factor while it is being set; without (looking at the terms), the
        current factor."""
        teachers = self.teacher_features(x)
        kwargs = self.fgd_kwargs(x, targets, teachers, image_sizes)
        # In float32 under AMP too: squares of large FPN activations overflow
        # float16 (and bfloat16 at the extremes).
        with torch.autocast(x.device.type, enabled=False):
            terms = self.distill_loss([s.float() for s in students], [t.float() for t in teachers], **kwargs)
        if self.auto_weight is None:
            return {k: v * self.distill_weight for k, v in terms.items()}
        if detection_loss is not None:
            factor = self.auto_weight.update(detection_loss, terms)
        else:
            factor = self.auto_weight.factor()
        return {k: v * factor.to(v.dtype) for k, v in terms.items()}

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.distill_loss, "set_epoch"):
            self.distill_loss.set_epoch(epoch)


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Every BatchNorm2d of ``module`` (in place) becomes torchvision's
    ``FrozenBatchNorm2d`` with its statistics and affine weights as buffers:
    the teacher normalises with its running statistics whatever mode it is
    put in, and the engine's synchronised BatchNorm (DDP), which converts
    BatchNorm layers only, leaves it alone. State-dict keys are unchanged
    (``num_batches_tracked`` is ignored on loading)."""
    from torchvision.ops.misc import FrozenBatchNorm2d

    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            with torch.no_grad():
                frozen.weight.copy_(child.weight)
                frozen.bias.copy_(child.bias)
                frozen.running_mean.copy_(child.running_mean)
                frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
        else:
            freeze_batchnorm(child)
    return module


def student_state(state: dict) -> dict:
    """The student's entries of a Distiller state dict, without the prefix."""
    return {k[len("student.") :]: v for k, v in state.items() if k.startswith("student.")}


@register_model
def hcam_distiller(pretrained: bool = False, **kwargs) -> nn.Module:
    """A Distiller from ``student``/``teacher`` ``{"name", "config"}``,
    ``preset``, ``loss_overrides``, ``distill_weight`` and ``auto_batches``."""
    refuse_pretrained(DISTILLER_NAME, pretrained, "load a local checkpoint")
    for k in TIMM_KEYS:
        kwargs.pop(k, None)
    return Distiller.from_config(**kwargs)
