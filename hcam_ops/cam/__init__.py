"""Looking at models (docs/ops/cam.md#cam-tools): Grad-CAM per class through
pytorch-grad-cam, GAP-CAM through hcam_ops.cam_gather, attention rollout,
overlays; ``python -m hcam_ops.cam`` is the CLI."""

from .classifier import CosineLogits, class_cams, swin_reshape_transform
from .gap_cam import gap_cam
from .overlay import overlay, save_overlays
from .rollout import attention_rollout

__all__ = [
    "CosineLogits",
    "attention_rollout",
    "class_cams",
    "gap_cam",
    "overlay",
    "save_overlays",
    "swin_reshape_transform",
]
