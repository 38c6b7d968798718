"""Detector / BEV feature distillation around hcam_ops.fgd_loss: CenterNet
ground-truth heatmaps, DistillBEV's adaptations, Gaussian foreground and
false-positive region,
and (ours) a four-region weighting and an automatic distillation weight: the library, below the models. The
training pipeline is ``python -m hcam_ops.train distill``."""

from .adapters import STUDENT_ADAPTATIONS, TEACHER_ADAPTATIONS, student_adaptation, teacher_adaptation
from .auto_weight import AutoDistillWeight
from .false_positives import FP_SCALE_MODES, false_positive_masks
from .gaussian_foreground import FOREGROUND_VARIANTS, foreground_variant, gaussian_foreground
from .heatmaps import centernet_heatmaps, gaussian_heatmaps, gaussian_radius
from .regions import REGIONS, region_masks, region_weights

__all__ = [
    "AutoDistillWeight",
    "FOREGROUND_VARIANTS",
    "FP_SCALE_MODES",
    "REGIONS",
    "STUDENT_ADAPTATIONS",
    "TEACHER_ADAPTATIONS",
    "centernet_heatmaps",
    "false_positive_masks",
    "foreground_variant",
    "gaussian_foreground",
    "gaussian_heatmaps",
    "gaussian_radius",
    "region_masks",
    "region_weights",
    "student_adaptation",
    "teacher_adaptation",
]
