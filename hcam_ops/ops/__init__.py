"""The Python face of each fused op: binding, fake impl, autograd, checks."""

from .bev_masks import bev_masks_from_boxes
from .cam_gather import cam_gather
from .cam_kl import cam_kl_loss, hierarchical_cam_kl_loss
from .farthest_point_sample import farthest_point_sample
from .fgd_loss import fgd_loss
from .fgd_masks import fgd_masks_from_boxes
from .minmax_normalize import minmax_normalize
from .multilabel_arcface import arcface_logits, multilabel_arcface_loss
from .segment_mean import segment_mean
from .softmax_kl import softmax_kl

# The op list, the one there is: hcam_ops exports it, and hcam_ops.reference
# holds a function of the same name for each.
__all__ = [
    "farthest_point_sample",
    "segment_mean",
    "fgd_loss",
    "fgd_masks_from_boxes",
    "bev_masks_from_boxes",
    "arcface_logits",
    "cam_gather",
    "cam_kl_loss",
    "hierarchical_cam_kl_loss",
    "minmax_normalize",
    "multilabel_arcface_loss",
    "softmax_kl",
]
