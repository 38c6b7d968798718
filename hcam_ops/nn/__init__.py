"""Modules built on the hcam_ops kernels."""

from .arcface import MultiLabelArcFaceLoss
from .cam_consistency import CAMConsistencyLoss
from .fgd import FGDLoss
from .gc_block import GcBlock
from .psa import PolarizedSelfAttention
from .stn import STN

__all__ = ["CAMConsistencyLoss", "FGDLoss", "GcBlock", "MultiLabelArcFaceLoss", "PolarizedSelfAttention", "STN"]
