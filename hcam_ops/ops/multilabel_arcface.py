"""hcam_ops.multilabel_arcface_loss and arcface_logits (docs/ops/multilabel_arcface.md).

The cosine matrix is a matrix product (the framework's BLAS); the margin,
label select, scale, BCE and d loss / d cos are one fused kernel per chunk of
classes, and the input gradients are accumulated by matrix products through
the normalisation, chunk by chunk: the loss path never holds more than one
chunk of [B, K] (unless the logits are requested). For "mean"/"sum" the
forward computes the gradients with the loss (three products per chunk) and
the backward scales them; "none" recomputes in its backward.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import _checks

_OP = "multilabel_arcface_loss"


@torch.library.register_fake("hcam_ops::multilabel_arcface")
def _forward_fake(
    features, weight, labels, scale, margin, easy_margin, reduction, grad_mask, return_logits, chunk_size
):
    B, D = features.shape
    K = weight.shape[0]
    loss = features.new_empty((B, K)) if reduction == "none" else features.new_empty(())
    want_features, want_weight = (want and reduction != "none" for want in grad_mask)
    # Each absent output is its own empty tensor, as in the kernel.
    return (
        loss,
        features.new_empty((B, D)) if want_features else features.new_empty((0,)),
        features.new_empty((K, D)) if want_weight else features.new_empty((0,)),
        features.new_empty((B, K)) if return_logits else features.new_empty((0,)),
    )


@torch.library.register_fake("hcam_ops::multilabel_arcface_backward")
def _backward_fake(grad, features, weight, labels, scale, margin, easy_margin, chunk_size, output_mask):
    torch._check(grad.shape == labels.shape, lambda: f"{_OP}_backward: grad must be [B, K], got {tuple(grad.shape)}")
    want_features, want_weight = output_mask
    return (
        features.new_empty(features.shape) if want_features else None,
        weight.new_empty(weight.shape) if want_weight else None,
    )


def _setup_context(ctx, inputs, output):
    features, weight, labels, scale, margin, easy_margin, reduction, grad_mask, _, chunk_size = inputs
    _, grad_features, grad_weight, logits = output
    ctx.mark_non_differentiable(grad_features, grad_weight, logits)
    ctx.reduction, ctx.grad_mask = reduction, tuple(grad_mask)
    ctx.args = (scale, margin, easy_margin, chunk_size)
    ctx.save_for_backward(features, weight, labels, grad_features, grad_weight)


def _backward(ctx, grad_loss, _gf, _gw, _logits):
    features, weight, labels, gf, gw = ctx.saved_tensors
    need = tuple(ctx.needs_input_grad[:2])
    if ctx.reduction != "none" and all(g or not n for g, n in zip(ctx.grad_mask, need)):
        # The forward computed every gradient asked for: scale them.
        gf = gf * grad_loss if need[0] else None
        gw = gw * grad_loss if need[1] else None
    else:
        # "none", or a forward that was asked for no gradients: recompute, with
        # the upstream gradient spread over [B, K] for "mean" and "sum".
        if ctx.reduction != "none":
            B, K = labels.shape
            grad_loss = grad_loss.expand(B, K) / (max(B * K, 1) if ctx.reduction == "mean" else 1)
        gf, gw = torch.ops.hcam_ops.multilabel_arcface_backward(
            grad_loss, features, weight, labels, *ctx.args, list(need)
        )
    return gf, gw, None, None, None, None, None, None, None, None


torch.library.register_autograd("hcam_ops::multilabel_arcface", _backward, setup_context=_setup_context)


def _check(features, weight, labels, scale, margin, reduction, check_inputs, chunk_size):
    _checks.check_float(features, _OP, "features")
    _checks.check_float(weight, _OP, "weight")
    if features.dim() != 2:
        raise ValueError(f"{_OP}: features must be [B, D], got shape {tuple(features.shape)}")
    if weight.dim() != 2:
        raise ValueError(f"{_OP}: weight must be [K, D], got shape {tuple(weight.shape)}")
    if weight.shape[1] != features.shape[1]:
        raise ValueError(f"{_OP}: features have D = {features.shape[1]}, weight has {weight.shape[1]}")
    if features.shape[1] == 0 or weight.shape[0] == 0:
        raise ValueError(
            f"{_OP}: needs D > 0 and K > 0, got features {tuple(features.shape)}, weight {tuple(weight.shape)}"
        )
    _checks.check_same_device(features, weight, _OP, "weight")
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"{_OP}: labels must be a tensor, got {type(labels).__name__}")
    if tuple(labels.shape) != (features.shape[0], weight.shape[0]):
        raise ValueError(
            f"{_OP}: labels must be [B, K] = [{features.shape[0]}, {weight.shape[0]}], got {tuple(labels.shape)}"
        )
    if labels.dtype != torch.bool and not labels.is_floating_point():
        raise TypeError(f"{_OP}: labels must be bool or float 0/1 (multi-hot), got {labels.dtype}")
    _checks.check_same_device(features, labels, _OP, "labels")
    s = _checks.check_real(scale, _OP, "scale")
    if not (s > 0 and math.isfinite(s)):
        raise ValueError(f"{_OP}: scale must be positive and finite, got {scale}")
    m = _checks.check_real(margin, _OP, "margin")
    if not (0 <= m < math.pi):
        raise ValueError(f"{_OP}: margin must be in [0, pi), got {margin}")
    _checks.check_choice(reduction, ("mean", "sum", "none"), _OP, "reduction")
    # None: the default chunking (the kernel's 0).
    chunk = 0 if chunk_size is None else _checks.check_size(chunk_size, _OP, "chunk_size")
    if check_inputs and not torch.compiler.is_compiling() and features.device.type != "meta":
        # One sync on CUDA; check_inputs=False skips it (then a NaN input gives NaN).
        bad_labels = labels.is_floating_point() and bool(((labels != 0) & (labels != 1)).any())
        if bad_labels:
            raise ValueError(f"{_OP}: labels must be multi-hot: every value 0 or 1")
        if not bool(torch.isfinite(features).all() & torch.isfinite(weight).all()):
            raise ValueError(f"{_OP}: features or weight hold NaN or Inf")
    return s, m, chunk


def multilabel_arcface_loss(
    features: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    scale: float = 30.0,
    margin: float = 0.5,
    easy_margin: bool = False,
    reduction: str = "mean",
    return_logits: bool = False,
    *,
    check_inputs: bool = True,
    chunk_size: int | None = None,
):
    """Multi-label ArcFace: additive angular margin on positive classes, then
    per-class BCE with logits.

    Args:
        features: ``[B, D]``, not necessarily normalised.
        weight: ``[K, D]`` class weights, on the features' device.
        labels: ``[B, K]`` multi-hot, bool or float 0/1 (any float dtype).
        scale, margin, easy_margin: ``s``, ``m`` (in ``[0, pi)``, as the published head takes it;
            0 is plain scaled-cosine BCE) and the
            margin mode of docs/ops/multilabel_arcface.md.
        reduction: ``"mean"`` over ``B*K`` (default), ``"sum"``, or ``"none"`` (``[B, K]``).
        return_logits: also return the training logits ``[B, K]`` (with the
            margin; not differentiable: for metrics).
        check_inputs: raise ``ValueError`` for labels outside {0, 1} and for
            NaN/Inf in features or weight (one device sync on CUDA; skipped
            under ``torch.compile``). Unchecked, a NaN input gives a NaN loss.
        chunk_size: classes per chunk, a positive int (more than ``K`` is
            ``K``); default (``None``): all of ``K`` when the chunk buffers
            fit in 64 MiB, else as many as fit, a multiple of 256.

    A zero feature (or weight) row has ``cos = 0`` against every class, as
    ``F.normalize`` defines it (``x / max(||x||, 1e-12)``), and its gradient is
    that of the same formula: scaled by ``1 / 1e-12``, not projected.
    Gradients reach ``features`` and ``weight``.

    Mixed dtypes (e.g. bfloat16 features from autocast with a float32 weight)
    are promoted to their common dtype (``torch.promote_types``) before the
    kernel, with or without autocast, as torch's losses run in float32 under
    autocast: the loss (and logits) are in that dtype and each input's
    gradient in its own dtype.
    """
    s, m, chunk = _check(features, weight, labels, scale, margin, reduction, check_inputs, chunk_size)
    features, weight = _checks.promote_floats(_OP, {"features": features, "weight": weight})
    if labels.dtype != torch.bool and labels.dtype != features.dtype:
        labels = labels.to(features.dtype)
    # Only the gradients autograd will ask for: a detached weight costs no
    # weight-gradient products.
    grad_enabled = torch.is_grad_enabled()
    grad_mask = [grad_enabled and features.requires_grad, grad_enabled and weight.requires_grad]
    loss, _, _, logits = torch.ops.hcam_ops.multilabel_arcface(
        features,
        weight,
        labels,
        s,
        m,
        bool(easy_margin),
        reduction,
        grad_mask,
        bool(return_logits),
        chunk,
    )
    return (loss, logits) if return_logits else loss


def arcface_logits(features: torch.Tensor, weight: torch.Tensor, scale: float = 30.0) -> torch.Tensor:
    """Inference scores ``s * cos`` (no margin): one matrix product of the
    normalised rows, a plain differentiable function (Grad-CAM can use it).

    Mixed dtypes (e.g. bfloat16 features with a float32 weight) are promoted
    to their common dtype (``torch.promote_types``) first, so the scores are
    in that dtype; under autocast the product then follows autocast's rule for
    ``F.linear`` (it runs in the autocast dtype), as torch's own layers do."""
    features, weight = _checks.promote_floats("arcface_logits", {"features": features, "weight": weight})
    return scale * F.linear(F.normalize(features, dim=-1, eps=1e-12), F.normalize(weight, dim=-1, eps=1e-12))
