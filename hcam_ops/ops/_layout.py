"""Feature layouts as the kernels see them, for the fake (meta) implementations:
the gradient of `features` has its strides whenever the kernel reads it in place
(csrc/ops/cam_features.cpp, view_features and empty_features_grad)."""

import torch


def channels_first(features: torch.Tensor) -> bool:
    """Whether the kernels read the features as rows of channels."""
    if features.dim() == 3:
        return (not features.is_contiguous()) and features.transpose(1, 2).is_contiguous()
    return features.is_contiguous() or not features.is_contiguous(memory_format=torch.channels_last)


def positions(features: torch.Tensor) -> int:
    return features.shape[1] if features.dim() == 3 else features.shape[2] * features.shape[3]


def empty_features_grad(features: torch.Tensor) -> torch.Tensor:
    cf = channels_first(features)
    if features.dim() == 3:
        B, N, C = features.shape
        return features.new_empty((B, C, N)).transpose(1, 2) if cf else features.new_empty((B, N, C))
    B, C, H, W = features.shape
    return features.new_empty((B, C, H, W)) if cf else features.new_empty((B, H, W, C)).permute(0, 3, 1, 2)
