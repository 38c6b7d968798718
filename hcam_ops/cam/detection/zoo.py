"""torchvision detectors by name, always with random initial weights (nothing
is downloaded), and their local checkpoints.

Names are torchvision's builders (``fasterrcnn_resnet50_fpn``, ...) and
small ``<family>_resnet18_fpn`` variants (ResNet-18 body, ``fpn_channels``
wide FPN) for CPU tests and demos. Labels follow torchvision: ``num_classes``
counts the background (label 0) for every family.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import nn

from .errors import DetCAMInputError

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

CHECKPOINT_FORMAT = "hcam_ops.detection/1"


def family(name: str) -> str:
    """``fasterrcnn``, ``maskrcnn``, ``retinanet`` or ``fcos``."""
    if name not in DETECTOR_NAMES:
        raise DetCAMInputError("model", f"unknown detector {name!r}; choose one of {', '.join(DETECTOR_NAMES)}")
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
        raise DetCAMInputError("num_classes", f"must count the background too (>= 2), got {num_classes}")
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
        raise DetCAMInputError("fpn_channels", f"FCOS needs a multiple of 32, got {channels}")
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


def save_checkpoint(
    path: str,
    detector: nn.Module,
    name: str,
    num_classes: int,
    classes: Sequence[str] | None = None,
    **build,
) -> None:
    """Writes what ``load_checkpoint`` needs to rebuild ``detector`` from the
    file alone: its name, ``num_classes``, class names (without the
    background) and the ``build_detector`` keywords (sizes, widths, ...)."""
    family(name)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "model_name": name,
        "num_classes": int(num_classes),
        "classes": list(classes) if classes is not None else None,
        "build": dict(build),
        "model": detector.state_dict(),
    }
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    # Write then rename: a reader never sees half a file.
    tmp = f"{path}.tmp"
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str, name: str | None = None, num_classes: int | None = None, **overrides):
    """``(detector in eval mode, class names or None, metadata)``.

    ``path`` is a file of ``save_checkpoint`` (everything is in it;
    ``overrides`` replace its build keywords, e.g. ``min_size``), or a bare
    state dict (``{"model": state_dict}`` too), which needs ``name``;
    ``num_classes`` is then read off the classifier's weight when not given."""
    if not os.path.isfile(path):
        raise DetCAMInputError("checkpoint", f"{path}: no such file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle, zip or weights_only errors: all mean "not a checkpoint"
        raise DetCAMInputError("checkpoint", f"{path}: not a readable torch checkpoint ({type(e).__name__})") from None
    if not isinstance(ckpt, dict):
        raise DetCAMInputError("checkpoint", f"{path}: expected a dict, got {type(ckpt).__name__}")
    classes, build = None, {}
    if ckpt.get("format") == CHECKPOINT_FORMAT:
        name = name or ckpt["model_name"]
        if name != ckpt["model_name"]:
            raise DetCAMInputError("model", f"the checkpoint holds a {ckpt['model_name']}")
        num_classes = num_classes or ckpt["num_classes"]
        classes, build, state = ckpt.get("classes"), dict(ckpt.get("build") or {}), ckpt["model"]
    else:
        state = ckpt.get("model", ckpt)
        if name is None:
            raise DetCAMInputError("model", f"{path} is a bare state dict: name its detector")
        family(name)
        num_classes = num_classes or infer_num_classes(state, name)
        if name in SMALL_DETECTORS and "backbone.fpn.inner_blocks.0.0.weight" in state:
            # The one build choice a state dict shows: the FPN width.
            build["fpn_channels"] = int(state["backbone.fpn.inner_blocks.0.0.weight"].shape[0])
    build.update(overrides)
    detector = build_detector(name, num_classes, **build)
    try:
        detector.load_state_dict(state)
    except RuntimeError as e:
        lines = str(e).splitlines()
        first = (lines[1] if len(lines) > 1 else lines[0]).strip()
        first = first if len(first) <= 160 else first[:160] + "..."
        raise DetCAMInputError(
            "checkpoint", f"{path}: does not fit {name} with {num_classes} classes ({first})"
        ) from None
    detector.eval()
    return detector, classes, {"model_name": name, "num_classes": num_classes, "build": build}


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
        raise DetCAMInputError(
            "checkpoint", f"no {key} in the state dict: not a {fam} checkpoint? (or pass --num-classes)"
        )
    rows = int(state[key].shape[0])
    if rows % per_location:
        raise DetCAMInputError("num_classes", f"cannot infer from {key} of {rows} rows; pass it")
    return rows // per_location
