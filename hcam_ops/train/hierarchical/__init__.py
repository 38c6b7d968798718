"""The hierarchical task: label hierarchy, data, losses, metrics."""

from .hierarchy import Hierarchy
from .losses import global_kl, hierarchical_loss
from .metrics import HierarchyMetrics, cam_iou

__all__ = ["Hierarchy", "HierarchyMetrics", "cam_iou", "global_kl", "hierarchical_loss"]
