"""Modules built on the hcam_ops kernels."""

from .arcface import MultiLabelArcFaceLoss
from .cam_consistency import CAMConsistencyLoss

__all__ = ["CAMConsistencyLoss", "MultiLabelArcFaceLoss"]
