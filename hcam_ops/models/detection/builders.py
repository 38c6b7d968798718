"""torchvision detectors by name, always with random initial weights (nothing
is downloaded).

Names are torchvision's builders (``fasterrcnn_resnet50_fpn``, ...) and
small ``<family>_resnet18_fpn`` variants (ResNet-18 body, ``fpn_channels``
wide FPN) for CPU tests and demos. Labels follow torchvision: ``num_classes``
counts the background (label 0) for every family.
"""

from __future__ import annotations

from torch import nn

from ..._cli import InputError

TORCHVISION_DETECTORS = (
    "fasterrcnn_resnet50_fpn",
    "fasterrcnn_resnet50_fpn_v2",
    "fasterrcnn_mobilenet_v3_large_fpn",
    "fasterrcnn_mobilenet_v3_large_320_fpn",
    "retinanet_resnet50_fpn",
    "retinanet_resnet50_fpn_v2",
    "fcos_resnet50_fpn",
    "maskrcnn_resnet50_fpn",
    "maskrcnn_resnet50_fpn_v2",
)
SMALL_DETECTORS = ("fasterrcnn_resnet18_fpn", "retinanet_resnet18_fpn", "fcos_resnet18_fpn", "maskrcnn_resnet18_fpn")
DETECTOR_NAMES = TORCHVISION_DETECTORS + SMALL_DETECTORS
FAMILIES = ("fasterrcnn", "maskrcnn", "retinanet", "fcos")


def family(name: str) -> str:
    """``fasterrcnn``, ``maskrcnn``, ``retinanet`` or ``fcos``."""
    if name not in DETECTOR_NAMES:
        raise InputError("model", f"unknown detector {name!r}; choose one of {', '.join(DETECTOR_NAMES)}")
    return name.split("_", 1)[0]


def build_detector(
    name: str,
    num_classes: int,
    *,
    min_size: int = 800,
    max_size: int = 1333,
    fpn_channels: int = 256,
    **kwargs,
) -> nn.Module:
    """A detector with random weights (``weights=None, weights_backbone=None``);
    ``kwargs`` go to the detector's constructor (``box_score_thresh``,
    ``score_thresh``, ``rpn_*``, ...). ``fpn_channels`` applies to the
    ResNet-18 variants only (torchvision's own are 256 wide)."""
    fam = family(name)
    if num_classes < 2:
        raise InputError("num_classes", f"must count the background too (>= 2), got {num_classes}")
    if name in TORCHVISION_DETECTORS:
        from torchvision.models import detection

        builder = getattr(detection, name)
        return builder(
            weights=None, weights_backbone=None, num_classes=num_classes, min_size=min_size, max_size=max_size, **kwargs
        )
    return _small_detector(fam, num_classes, min_size, max_size, fpn_channels, **kwargs)


def _small_detector(fam: str, num_classes: int, min_size: int, max_size: int, channels: int, **kwargs) -> nn.Module:
    from torchvision.models import resnet18
    from torchvision.models.detection import FCOS, FasterRCNN, MaskRCNN, RetinaNet
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    if fam == "fcos" and channels % 32:
        # FCOS's head normalises with GroupNorm(32, channels).
        raise InputError("fpn_channels", f"FCOS needs a multiple of 32, got {channels}")
    body = resnet18(weights=None)
    sizes = {"min_size": min_size, "max_size": max_size}
    if fam in ("retinanet", "fcos"):
        # As torchvision builds them: C3-C5 plus P6/P7 from P5.
        layers = {"layer2": "0", "layer3": "1", "layer4": "2"}
        backbone = BackboneWithFPN(
            body, layers, [128, 256, 512], channels, extra_blocks=LastLevelP6P7(channels, channels)
        )
        cls = RetinaNet if fam == "retinanet" else FCOS
        return cls(backbone, num_classes, **sizes, **kwargs)
    layers = {"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"}
    backbone = BackboneWithFPN(body, layers, [64, 128, 256, 512], channels)
    # The box head scales with the FPN width (torchvision: 256 -> 1024).
    representation = 4 * channels
    heads = {
        "box_head": TwoMLPHead(channels * 7 * 7, representation),
        "box_predictor": FastRCNNPredictor(representation, num_classes),
    }
    if fam == "fasterrcnn":
        return FasterRCNN(backbone, None, **sizes, **heads, **kwargs)
    heads["mask_head"] = MaskRCNNHeads(channels, (channels,) * 4, 1)
    heads["mask_predictor"] = MaskRCNNPredictor(channels, channels, num_classes)
    return MaskRCNN(backbone, None, **sizes, **heads, **kwargs)


def infer_num_classes(state: dict, name: str) -> int:
    """The class count (with background) from a state dict's classifier."""
    fam = family(name)
    if fam in ("fasterrcnn", "maskrcnn"):
        key, per_location = "roi_heads.box_predictor.cls_score.weight", 1
    else:
        # RetinaNet predicts num_anchors (3 sizes x 3 ratios) x classes per
        # location, FCOS one set of classes per location.
        key, per_location = "head.classification_head.cls_logits.weight", 9 if fam == "retinanet" else 1
    if key not in state:
        raise InputError("checkpoint", f"no {key} in the state dict: not a {fam} checkpoint? (or pass --num-classes)")
    rows = int(state[key].shape[0])
    if rows % per_location:
        raise InputError("num_classes", f"cannot infer from {key} of {rows} rows; pass it")
    return rows // per_location
