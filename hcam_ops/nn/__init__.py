"""Modules built on the hcam_ops kernels."""

from .cam_consistency import CAMConsistencyLoss

__all__ = ["CAMConsistencyLoss"]
