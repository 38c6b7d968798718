"""The class token's attention to the patches in a ViT's last block, per head:
the seed 002's ``ego_attn`` map, which LOCATE (``Reagan1311/LOCATE``,
``models/locate.py``: ``ego_attn[:, :, 0, 1:]`` of DINO's last block, from
``get_last_key``) and BiT-Align's locate model binarise into masks."""

from __future__ import annotations

import fnmatch

import torch
from torch import nn

from .._cli import InputError
from .rollout import attention_maps, prefix_tokens, token_grid

# The modules that receive a timm attention block's softmaxed weights (the
# pattern attention_maps reads every block with).
ATTENTION_MODULES = "*attn.attn_drop"


def last_attention_module(model: nn.Module) -> str:
    """The name of the last block's ``attn_drop`` (module order is block order
    in timm's ViTs, EVAs and the models wrapping them)."""
    names = [n for n, _ in model.named_modules() if fnmatch.fnmatch(n, ATTENTION_MODULES)]
    if not names:
        raise InputError("model", f"no timm attention block ({ATTENTION_MODULES}) in this {type(model).__name__}")
    return names[-1]


@torch.no_grad()
def cls_attention(model: nn.Module, images: torch.Tensor, num_prefix_tokens: int | None = None) -> torch.Tensor:
    """``[B, heads, h, w]``: the softmaxed attention of the first token (the
    class token) to each patch token in the last block, each head apart,
    laid on the patch grid; the raw weights (not rescaled), in the model's
    dtype.

    Prefix tokens (class token, registers, distillation token) are dropped
    from the columns as in :mod:`~hcam_ops.cam.rollout`: the model's
    ``num_prefix_tokens`` unless given. Only the last block is hooked."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        raise InputError("images", f"expected a batch [B, 3, H, W], got {getattr(images, 'shape', type(images))}")
    attn = attention_maps(model, images, names=[last_attention_module(model)])
    (weights,) = attn.values()  # [B, heads, N, N]
    prefix = prefix_tokens(model, num_prefix_tokens)
    if not 0 < prefix < weights.shape[-1]:
        raise InputError("num_prefix_tokens", f"must be in [1, {weights.shape[-1]}) tokens, got {prefix}")
    h, w = token_grid(model, weights.shape[-1] - prefix)
    row = weights[:, :, 0, prefix:]
    return row.reshape(row.shape[0], row.shape[1], h, w)
