"""Plain-PyTorch cam_gather: the contract of hcam_ops.cam_gather."""

import torch


def as_tokens(features: torch.Tensor) -> torch.Tensor:
    """[B, N, C] tokens, or a [B, C, H, W] map as [B, H*W, C]."""
    return features.flatten(2).transpose(1, 2) if features.dim() == 4 else features


def as_weight_matrix(weight: torch.Tensor) -> torch.Tensor:
    return weight.flatten(1) if weight.dim() == 4 else weight


def cam_gather(
    features: torch.Tensor, weight: torch.Tensor, index: torch.Tensor, *, check_index: bool = True
) -> torch.Tensor:
    x = as_tokens(features)
    w = as_weight_matrix(weight)[index]  # [B, C] or [B, L, C]
    if index.dim() == 1:
        return torch.einsum("bnc,bc->bn", x, w)
    return torch.einsum("bnc,blc->bln", x, w)
