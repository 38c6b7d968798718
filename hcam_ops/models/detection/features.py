"""What distillation reads off a torchvision RetinaNet / FCOS: its FPN levels
(kept with their autograd graph) and its classification score maps."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

FPN_CHANNELS = 256
NUM_LEVELS = 5  # P3-P7, as torchvision builds RetinaNet and FCOS


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
