"""Training (``python -m hcam_ops.train hierarchical|multilabel``, one process
or several under ``torchrun``): the shared engine (``engine.py``) and one
package per task."""

from .checkpoint import build_model
from .cli import main
from .hierarchical import Hierarchy, HierarchyMetrics, cam_iou, global_kl, hierarchical_loss

__all__ = ["Hierarchy", "HierarchyMetrics", "build_model", "cam_iou", "global_kl", "hierarchical_loss", "main"]
