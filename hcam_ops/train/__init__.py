"""Training of the hierarchical models (``python -m hcam_ops.train``)."""

from .hierarchy import Hierarchy
from .losses import global_kl, hierarchical_loss
from .loop import main
from .metrics import HierarchyMetrics, cam_iou

__all__ = ["Hierarchy", "HierarchyMetrics", "cam_iou", "global_kl", "hierarchical_loss", "main"]
