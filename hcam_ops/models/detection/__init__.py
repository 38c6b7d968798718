"""Detectors: torchvision's builders by name with random weights and small
ResNet-18 variants (``builders.py``), their checkpoints (``loading.py``),
what distillation reads off them (``features.py``) and the
:class:`Distiller` (``distiller.py``). Every name is registered with timm on
import (``registry.py``; ``hcam_distiller`` beside its class)."""

from . import registry  # noqa: F401  (registers the detector names with timm)
from .builders import (
    DETECTOR_NAMES,
    FAMILIES,
    SMALL_DETECTORS,
    TORCHVISION_DETECTORS,
    build_detector,
    family,
    infer_num_classes,
)
from .distiller import DISTILLER_NAME, Distiller, freeze_batchnorm, student_state
from .features import FPN_CHANNELS, NUM_LEVELS, FeatureTap, check_fpn, score_maps
from .loading import load_checkpoint, save_checkpoint

__all__ = [
    "DETECTOR_NAMES",
    "DISTILLER_NAME",
    "FAMILIES",
    "FPN_CHANNELS",
    "NUM_LEVELS",
    "SMALL_DETECTORS",
    "TORCHVISION_DETECTORS",
    "Distiller",
    "FeatureTap",
    "build_detector",
    "check_fpn",
    "family",
    "freeze_batchnorm",
    "infer_num_classes",
    "load_checkpoint",
    "save_checkpoint",
    "score_maps",
    "student_state",
]
