"""hcam_ops.softmax_kl: KL between two rows of logits' softmaxes (docs/ops/cam.md#softmax_kl)."""

from __future__ import annotations

import torch

from . import _checks
from ._reduce import reduce_rows

_OP = "softmax_kl"


@torch.library.register_fake("hcam_ops::softmax_kl")
def _softmax_kl_fake(p_logits, q_logits, temperature, direction):
    return p_logits.new_empty(p_logits.shape[:-1])


@torch.library.register_fake("hcam_ops::softmax_kl_backward")
def _softmax_kl_backward_fake(grad, p_logits, q_logits, temperature, direction):
    _checks.check_same_device_fake(grad, "grad", p_logits, "p_logits", "softmax_kl_backward")
    rows = tuple(p_logits.shape[:-1])
    torch._check(
        tuple(grad.shape) == rows,
        lambda: f"softmax_kl_backward: grad must have the logits' shape without the last dim, {rows}",
    )
    return (
        torch.empty_like(p_logits, memory_format=torch.contiguous_format),
        torch.empty_like(q_logits, memory_format=torch.contiguous_format),
    )


def _setup_context(ctx, inputs, output):
    p_logits, q_logits, temperature, direction = inputs
    ctx.temperature, ctx.direction = temperature, direction
    ctx.save_for_backward(p_logits, q_logits)


def _backward(ctx, grad):
    p_logits, q_logits = ctx.saved_tensors
    grad_p, grad_q = torch.ops.hcam_ops.softmax_kl_backward(grad, p_logits, q_logits, ctx.temperature, ctx.direction)
    return grad_p, grad_q, None, None


torch.library.register_autograd("hcam_ops::softmax_kl", _backward, setup_context=_setup_context)


def softmax_kl(
    p_logits: torch.Tensor,
    q_logits: torch.Tensor,
    temperature: float = 1.0,
    direction: str = "fine_to_coarse",
    reduction: str = "batchmean",
) -> torch.Tensor:
    """KL between ``P = softmax(p_logits / T)`` and ``Q = softmax(q_logits / T)`` over the last dim.

    ``direction="fine_to_coarse"``: ``sum P log(P / Q)``; ``"coarse_to_fine"``:
    ``sum Q log(Q / P)`` (what ``F.kl_div(log P, Q)`` computes). ``reduction``:
    ``"batchmean"`` (sum over rows divided by the first dim; 0 for an empty
    batch), ``"sum"``, or ``"none"`` (the leading dims). Both inputs get
    gradients; detach the teacher yourself. Mixed dtypes (e.g. bfloat16 student
    logits under autocast with a float32 teacher) are promoted to their common
    dtype (``torch.promote_types``) before the kernel, with or without
    autocast: the loss is in that dtype, each gradient in its input's dtype.
    """
    _checks.check_float(p_logits, _OP, "p_logits")
    _checks.check_float(q_logits, _OP, "q_logits")
    if p_logits.shape != q_logits.shape:
        raise ValueError(
            f"{_OP}: p_logits {tuple(p_logits.shape)} and q_logits {tuple(q_logits.shape)} differ in shape"
        )
    if p_logits.device != q_logits.device:
        raise ValueError(f"{_OP}: p_logits is on {p_logits.device}, q_logits on {q_logits.device}")
    if p_logits.dim() == 0 or p_logits.shape[-1] == 0:
        raise ValueError(f"{_OP}: logits need a non-empty last dimension, got shape {tuple(p_logits.shape)}")
    temperature = _checks.check_temperature(temperature, _OP)
    _checks.check_choice(direction, _checks.DIRECTIONS, _OP, "direction")
    _checks.check_choice(reduction, ("batchmean", "sum", "none"), _OP, "reduction")
    p_logits, q_logits = _checks.promote_floats(_OP, {"p_logits": p_logits, "q_logits": q_logits})
    per_row = torch.ops.hcam_ops.softmax_kl(p_logits, q_logits, temperature, direction)
    return reduce_rows(per_row, reduction, _OP)
