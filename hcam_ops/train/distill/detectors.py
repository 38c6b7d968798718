"""The detectors of ``python -m hcam_ops.distill.train``, registered with timm
on import so :func:`hcam_ops.train.build_model` rebuilds them from a
checkpoint alone (``model_name`` + ``model_config``):

- ``retinanet_resnet50_fpn``, ``fcos_resnet50_fpn`` (teachers) and
  ``retinanet_resnet18_fpn``, ``fcos_resnet18_fpn`` (students): built by
  :func:`hcam_ops.cam.detection.build_detector` with random weights (nothing
  is downloaded). The ResNet-18 students get a 256-wide FPN over C3-C5 plus
  P6/P7 from P5 (``LastLevelP6P7(256, 256)``), as torchvision builds the
  ResNet-50 ones, so their P3-P7 levels match the teacher's one to one.
- ``hcam_distiller``: a :class:`~hcam_ops.train.distill.distiller.Distiller`
  (student, frozen teacher, FGD loss) from the configs of both.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from timm.models import register_model
from torch import nn

FAMILIES = ("retinanet", "fcos")
SIZES = {"teacher": "resnet50", "student": "resnet18"}
FPN_CHANNELS = 256
NUM_LEVELS = 5  # P3-P7
DETECTOR_NAMES = tuple(f"{f}_{b}_fpn" for f in FAMILIES for b in SIZES.values())
DISTILLER_NAME = "hcam_distiller"


def detector_name(family: str, size: str) -> str:
    """``retinanet``/``fcos`` and ``teacher``/``student`` -> the model name."""
    return f"{family}_{SIZES[size]}_fpn"


def family_of(name: str) -> str:
    return name.split("_", 1)[0]


def detector_config(num_classes: int, image_size: tuple[int, int]) -> dict:
    """``model_config`` of a detector: classes with the background, and
    ``min_size``/``max_size`` set to the image size (no resizing)."""
    return {"num_classes": int(num_classes), "min_size": min(image_size), "max_size": max(image_size)}


def build(name: str, num_classes: int, min_size: int, max_size: int, **kwargs) -> nn.Module:
    from ...cam.detection.zoo import build_detector

    if name not in DETECTOR_NAMES:
        raise ValueError(f"unknown detector {name!r}; one of {', '.join(DETECTOR_NAMES)}")
    if name.endswith("resnet18_fpn"):
        kwargs.setdefault("fpn_channels", FPN_CHANNELS)
    return build_detector(name, num_classes, min_size=min_size, max_size=max_size, **kwargs)


_TIMM_KEYS = ("pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")


def _entry(name: str):
    def fn(pretrained: bool = False, **kwargs) -> nn.Module:
        if pretrained:
            raise ValueError(f"{name}: no pretrained weights (nothing is downloaded)")
        for k in _TIMM_KEYS:
            kwargs.pop(k, None)
        return build(name, **kwargs)

    fn.__name__ = fn.__qualname__ = name
    fn.__module__ = __name__
    fn.__doc__ = f"torchvision {name} with random weights (hcam_ops.distill)."
    return fn


for _name in DETECTOR_NAMES:
    globals()[_name] = register_model(_entry(_name))


@register_model
def hcam_distiller(pretrained: bool = False, **kwargs) -> nn.Module:
    """A Distiller from ``student``/``teacher`` ``{"name", "config"}``,
    ``preset``, ``loss_overrides`` and ``distill_weight``."""
    from .distiller import Distiller

    if pretrained:
        raise ValueError("hcam_distiller: no pretrained weights")
    for k in _TIMM_KEYS:
        kwargs.pop(k, None)
    return Distiller.from_config(**kwargs)


class FeatureTap:
    """A forward hook on a detector's ``backbone``: the last output (an
    ``OrderedDict`` of FPN levels), kept with its autograd graph."""

    def __init__(self, detector: nn.Module):
        self.features: OrderedDict | None = None
        self.handle = detector.backbone.register_forward_hook(self._record)

    def _record(self, module, inputs, output) -> None:
        self.features = output

    def take(self) -> list[torch.Tensor]:
        if self.features is None:
            raise RuntimeError("FeatureTap: the backbone has not run")
        out, self.features = list(self.features.values()), None
        return out

    def remove(self) -> None:
        self.handle.remove()


def score_maps(detector: nn.Module, features: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per level ``[B, H, W]``: the classification score (sigmoid of the cls
    head's logits, max over anchors and object classes; torchvision's class 0
    is the never-trained background and is left out)."""
    head = detector.head.classification_head
    maps = []
    for f in features:
        B, _, H, W = f.shape
        logits = head([f])  # [B, H*W*A, K]
        logits = logits.reshape(B, H, W, -1, head.num_classes)[..., 1:]
        maps.append(torch.sigmoid(logits.float().amax(dim=(-1, -2))))
    return maps


def check_fpn(detector: nn.Module, what: str) -> None:
    """A RetinaNet/FCOS with a P3-P7 FPN of 256 channels, or ValueError."""
    from torchvision.models.detection import FCOS, RetinaNet

    if not isinstance(detector, (RetinaNet, FCOS)):
        raise ValueError(f"{what}: a {type(detector).__name__}, not a RetinaNet or FCOS")
    inner = getattr(getattr(detector.backbone, "fpn", None), "inner_blocks", None)
    if inner is None or detector.backbone.out_channels != FPN_CHANNELS:
        raise ValueError(f"{what}: its backbone is not a {FPN_CHANNELS}-channel FPN")
