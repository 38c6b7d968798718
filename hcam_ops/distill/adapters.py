"""DistillBEV's adaptations (docs/ops/fgd.md#adaptations): a student
adaptation maps the student's map to the teacher's channels (and, with an
upsample factor, to a finer grid); a teacher adaptation pools the teacher's
map with a stride, so maps of different resolutions meet on one grid.

The layer lists follow the published ``bevdet_distill.py`` (``TwoLayer``:
conv k x k / stride -> BN -> ReLU -> conv 1x1 -> BN -> ReLU, hidden width =
input width; ``upsample_*``: bilinear upsampling with ``align_corners=True``
first). Each module carries ``grid_stride``: how many input cells one output cell
spans (``1 / upsample_factor`` for the upsampling ones), which the module
uses to say which factor would make two levels meet.
"""

from __future__ import annotations

from torch import nn

STUDENT_ADAPTATIONS = ("auto", "identity", "1x1conv", "3x3conv", "upsample_1x1conv", "upsample_2layer")
TEACHER_ADAPTATIONS = ("identity", "avgpool", "maxpool")


class TwoLayer(nn.Sequential):
    """The published ``TwoLayer``: ``conv1`` (k x k, stride, no padding) ->
    BN -> ReLU -> ``conv2`` (1x1) -> BN -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, in_channels, kernel_size, stride, 0)
        self.norm1 = nn.BatchNorm2d(in_channels)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(in_channels, out_channels, 1, 1, 0)
        self.norm2 = nn.BatchNorm2d(out_channels)
        self.act2 = nn.ReLU(inplace=True)


def student_adaptation(kind: str, student_channels: int, teacher_channels: int, upsample_factor: int = 4) -> nn.Module:
    """``"auto"`` (FGD's ``align``: a 1x1 conv where the channel counts
    differ, else the identity), ``"identity"``, ``"1x1conv"`` (DistillBEV's
    config), ``"3x3conv"``, ``"upsample_1x1conv"``, ``"upsample_2layer"``."""
    if kind not in STUDENT_ADAPTATIONS:
        raise ValueError(f"student_adaptation must be one of {STUDENT_ADAPTATIONS}, got {kind!r}")
    if kind.startswith("upsample") and (int(upsample_factor) != upsample_factor or upsample_factor < 1):
        raise ValueError(f"upsample_factor must be a positive integer, got {upsample_factor!r}")
    if kind == "auto":
        kind = "1x1conv" if student_channels != teacher_channels else "identity"
    if kind == "identity":
        if student_channels != teacher_channels:
            raise ValueError(
                f"student_adaptation='identity' needs equal channels, got student {student_channels}, "
                f"teacher {teacher_channels}"
            )
        module = nn.Identity()
    elif kind == "1x1conv":
        module = nn.Conv2d(student_channels, teacher_channels, 1, 1, 0)
    elif kind == "3x3conv":
        module = nn.Conv2d(student_channels, teacher_channels, 3, 1, 1)
    else:
        up = nn.Upsample(scale_factor=int(upsample_factor), mode="bilinear", align_corners=True)
        proj = (
            nn.Conv2d(student_channels, teacher_channels, 1)
            if kind == "upsample_1x1conv"
            else TwoLayer(student_channels, teacher_channels)
        )
        module = nn.Sequential(up, proj)
        module.grid_stride = 1.0 / int(upsample_factor)
        return module
    module.grid_stride = 1.0
    return module


def teacher_adaptation(kind: str, stride: int = 4) -> nn.Module:
    """``"identity"`` (DistillBEV's config), ``"avgpool"`` or ``"maxpool"``
    (kernel = stride = ``stride``). Parameter-free on purpose: the fused loss
    takes no gradient into the teacher's side (the published code would
    train a parametric teacher adaptation through the loss)."""
    if kind not in TEACHER_ADAPTATIONS:
        raise ValueError(f"teacher_adaptation must be one of {TEACHER_ADAPTATIONS}, got {kind!r}")
    if kind == "identity":
        module = nn.Identity()
        module.grid_stride = 1.0
        return module
    if int(stride) != stride or stride < 1:
        raise ValueError(f"teacher stride must be a positive integer, got {stride!r}")
    pool = nn.AvgPool2d if kind == "avgpool" else nn.MaxPool2d
    module = pool(kernel_size=int(stride), stride=int(stride))
    module.grid_stride = float(stride)
    return module


__all__ = ["STUDENT_ADAPTATIONS", "TEACHER_ADAPTATIONS", "TwoLayer", "student_adaptation", "teacher_adaptation"]
