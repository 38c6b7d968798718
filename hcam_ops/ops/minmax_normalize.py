"""hcam_ops.minmax_normalize: per-row min-max normalisation (docs/ops/cam.md#minmax_normalize)."""

from __future__ import annotations

import torch

from . import _checks

_OP = "minmax_normalize"


@torch.library.register_fake("hcam_ops::minmax_normalize")
def _minmax_normalize_fake(x, eps):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.register_fake("hcam_ops::minmax_normalize_backward")
def _minmax_normalize_backward_fake(grad, x, eps):
    torch._check(grad.shape == x.shape, lambda: "minmax_normalize_backward: the two logit tensors differ in shape")
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _setup_context(ctx, inputs, output):
    x, eps = inputs
    ctx.eps = eps
    ctx.save_for_backward(x)


def _backward(ctx, grad):
    (x,) = ctx.saved_tensors
    return torch.ops.hcam_ops.minmax_normalize_backward(grad, x, ctx.eps), None


torch.library.register_autograd("hcam_ops::minmax_normalize", _backward, setup_context=_setup_context)


def minmax_normalize(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``(x - min) / (max - min + eps)`` over the last dimension.

    The gradient of the min and the max goes to the first position attaining
    it (``torch.min(dim)`` semantics); a constant row maps to zeros. A NaN in a
    row makes that whole row NaN (as ``torch.min`` propagates NaN).
    """
    _checks.check_float(x, _OP, "x")
    if x.dim() == 0 or x.shape[-1] == 0:
        raise ValueError(f"{_OP}: x needs a non-empty last dimension, got shape {tuple(x.shape)}")
    return torch.ops.hcam_ops.minmax_normalize(x, _checks.check_eps(eps, _OP))
