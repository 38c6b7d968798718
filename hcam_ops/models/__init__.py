"""Models built on the hcam_ops kernels, registered with timm on import:
``hcast_small``, ``hcast_base``, ``cast_small_cam``, ``cast_base_cam``;
``arc_psa_swin_tiny``, ``arc_psa_swin_base``, ``arc_psa_swin_base_384`` and the
baseline ``swin_focal_tiny``."""

from .arc_psa_swin import LEAF_CLASSES, ArcPSASwin, PSAFeatures, SwinFocal, sigmoid_focal_loss
from .cast import HCAST, ConvStem, clusters_to_grid
from .graph_pool import GraphPool

__all__ = [
    "LEAF_CLASSES",
    "ArcPSASwin",
    "ConvStem",
    "GraphPool",
    "HCAST",
    "PSAFeatures",
    "SwinFocal",
    "clusters_to_grid",
    "sigmoid_focal_loss",
]
