"""Looking at models (docs/ops/cam.md#cam-tools): Grad-CAM per class through
pytorch-grad-cam, GAP-CAM through hcam_ops.cam_gather, attention rollout,
the seed 002's attention masks (docs/attention_masks.md), overlays;
``python -m hcam_ops.cam`` is the CLI."""

from .attention_masks import AttentionMasks, attention_masks
from .classifier import CosineLogits, class_cams, swin_reshape_transform
from .cls_attention import cls_attention
from .gap_cam import gap_cam
from .masks import binarize_at_mean, fuse_masks, mask_iou, masked_similarity, normalize_minmax, select_heads
from .overlay import overlay, save_overlays
from .pool_attention import pool_attention
from .rollout import attention_rollout

__all__ = [
    "AttentionMasks",
    "CosineLogits",
    "attention_masks",
    "attention_rollout",
    "binarize_at_mean",
    "class_cams",
    "cls_attention",
    "fuse_masks",
    "gap_cam",
    "mask_iou",
    "masked_similarity",
    "normalize_minmax",
    "overlay",
    "pool_attention",
    "save_overlays",
    "select_heads",
    "swin_reshape_transform",
]
