"""Models built on the hcam_ops kernels, registered with timm on import:
``hcast_small``, ``hcast_base``, ``cast_small_cam``, ``cast_base_cam``."""

from .cast import HCAST, ConvStem, clusters_to_grid
from .graph_pool import GraphPool

__all__ = ["ConvStem", "GraphPool", "HCAST", "clusters_to_grid"]
