"""The hierarchical (H-CAST) task: label hierarchy, data (synthetic,
ImageFolder, the published CUB-200 and FGVC-Aircraft layouts), losses,
hierarchical mixup, EMA, metrics."""

from .hierarchy import Hierarchy
from .losses import global_kl, hierarchical_loss
from .metrics import HierarchyMetrics, cam_iou

__all__ = ["Hierarchy", "HierarchyMetrics", "cam_iou", "global_kl", "hierarchical_loss"]
