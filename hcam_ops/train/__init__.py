"""Training (``python -m hcam_ops.train hierarchical|multilabel|distill``, one
process or several under ``torchrun``): the shared engine (``engine.py``), one
package per task and the tools beside them (``synthetic_detector.py``,
``distill/convert.py``, ``distill/dump.py``). Every CLI that trains lives
here, on top of the library."""

from .cli import main
from .hierarchical import Hierarchy, HierarchyMetrics, cam_iou, global_kl, hierarchical_loss

__all__ = ["Hierarchy", "HierarchyMetrics", "build_model", "cam_iou", "global_kl", "hierarchical_loss", "main"]


def __getattr__(name):
    # hcam_ops.models imports timm: loaded on first use, so that
    # `python -m hcam_ops.train --help` (which imports this package) is quick.
    if name == "build_model":
        from ..models import build_model

        return build_model
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
