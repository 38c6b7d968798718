"""Helpers of detector / BEV feature distillation around hcam_ops.fgd_loss:
CenterNet ground-truth heatmaps and DistillBEV's region decomposition."""

from .heatmaps import centernet_heatmaps, gaussian_heatmaps, gaussian_radius
from .regions import REGIONS, region_masks, region_weights

__all__ = [
    "REGIONS",
    "centernet_heatmaps",
    "gaussian_heatmaps",
    "gaussian_radius",
    "region_masks",
    "region_weights",
]
