"""Modules built on the hcam_ops kernels."""

from .arcface import MultiLabelArcFaceLoss
from .attention_pool import AttentionPool2d
from .cam_consistency import CAMConsistencyLoss
from .fgd import FGDLoss
from .gc_block import GcBlock
from .psa import PolarizedSelfAttention
from .stn import STN

__all__ = [
    "AttentionPool2d",
    "CAMConsistencyLoss",
    "FGDLoss",
    "GcBlock",
    "MultiLabelArcFaceLoss",
    "PolarizedSelfAttention",
    "STN",
]
