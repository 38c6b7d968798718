"""hcam_ops_stable: minmax_normalize on the LibTorch stable ABI (an experiment,
docs/stable_abi.md). The Python face is hcam_ops/ops/minmax_normalize.py's,
for the operators hcam_ops_stable::minmax_normalize[_backward]: the fake
implementations and the autograd registration are plain torch.library
Python and need no change for the stable ABI."""

from __future__ import annotations

import torch

from . import _C  # noqa: F401  (loading it registers the operators)

cpu_capability = _C.cpu_capability


@torch.library.register_fake("hcam_ops_stable::minmax_normalize")
def _minmax_normalize_fake(x, eps):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.register_fake("hcam_ops_stable::minmax_normalize_backward")
def _minmax_normalize_backward_fake(grad, x, eps):
    torch._check(grad.shape == x.shape, lambda: "minmax_normalize_backward: the two logit tensors differ in shape")
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _setup_context(ctx, inputs, output):
    x, eps = inputs
    ctx.eps = eps
    ctx.save_for_backward(x)


def _backward(ctx, grad):
    (x,) = ctx.saved_tensors
    return torch.ops.hcam_ops_stable.minmax_normalize_backward(grad, x, ctx.eps), None


torch.library.register_autograd("hcam_ops_stable::minmax_normalize", _backward, setup_context=_setup_context)


def minmax_normalize(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """hcam_ops.minmax_normalize's operator on the stable ABI (no argument checks here)."""
    return torch.ops.hcam_ops_stable.minmax_normalize(x, eps)
