"""hcam_ops.cam_kl_loss and hierarchical_cam_kl_loss: the fused CAM-consistency
loss (docs/ops/cam.md#hierarchical_cam_kl_loss). One read of the features gives every level's CAM; the
per-sample min-max, softmax and KL run inside the kernel, which also stores the
backward's per-position coefficients, so the backward is one more read of the
features plus a deterministic per-class reduction for the weight gradients."""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch

from . import _checks
from ._constants import MAX_LEVELS
from ._dtypes import acc_dtype
from ._layout import empty_features_grad, positions
from ._reduce import reduce_rows


@torch.library.register_fake("hcam_ops::cam_kl")
def _cam_kl_fake(features, weights, indices, temperature, eps, direction):
    B, N, L = features.shape[0], positions(features), len(weights)
    torch._check(2 <= L <= MAX_LEVELS, lambda: f"cam_kl_loss: needs 2 to {MAX_LEVELS} levels, got {L}")
    return features.new_empty((B,)), features.new_empty((B, L - 1, N), dtype=acc_dtype(features.dtype))


@torch.library.register_fake("hcam_ops::cam_kl_backward")
def _cam_kl_backward_fake(grad, features, weights, indices, coef, output_mask):
    for t, name in ((grad, "grad"), (coef, "coef")):
        _checks.check_same_device_fake(t, name, features, "features", "cam_kl_loss_backward")
    B, N, L = features.shape[0], positions(features), len(weights)
    torch._check(tuple(coef.shape) == (B, L - 1, N), lambda: "cam_kl_loss_backward: coef must be [B, L-1, N]")
    torch._check(tuple(grad.shape) == (B,), lambda: "cam_kl_loss_backward: grad must be [B]")
    want_features, want_weights = output_mask
    return (
        empty_features_grad(features) if want_features else None,
        [w.new_empty(w.shape) for w in weights[:-1]] if want_weights else [],
    )


def _setup_context(ctx, inputs, output):
    features, weights, indices, temperature, eps, direction = inputs
    ctx.mark_non_differentiable(output[1])
    ctx.num_levels = len(weights)
    ctx.save_for_backward(features, output[1], *weights, *indices)


def _backward(ctx, grad_kl, _grad_coef):
    features, coef, *rest = ctx.saved_tensors
    L = ctx.num_levels
    weights, indices = rest[:L], rest[L:]
    # One flag per weight; the coarsest level is the detached teacher and gets none.
    need_features, need_weights = ctx.needs_input_grad[0], ctx.needs_input_grad[1][:-1]
    grad_features, grad_weights = torch.ops.hcam_ops.cam_kl_backward(
        grad_kl, features, weights, indices, coef, [need_features, any(need_weights)]
    )
    grad_weights = [g if need else None for g, need in zip(grad_weights, need_weights)] or [None] * (L - 1)
    return grad_features, [*grad_weights, None], [None] * L, None, None, None


torch.library.register_autograd("hcam_ops::cam_kl", _backward, setup_context=_setup_context)


def hierarchical_cam_kl_loss(
    features: torch.Tensor,
    weights: Sequence[torch.Tensor],
    indices: Sequence[torch.Tensor],
    temperature: float = 1.0,
    eps: float = 1e-6,
    direction: str = "fine_to_coarse",
    reduction: str = "batchmean",
    *,
    check_index: bool = True,
) -> torch.Tensor:
    """CAM consistency over ``L`` levels ordered fine to coarse (2 to 5), summed
    over adjacent pairs; each coarser level is the detached teacher of the next
    finer one, so the coarsest weight gets no gradient.

    For each pair and sample: ``cam = <features, weight[index]>`` per position,
    min-max normalised (``eps``), ``P = softmax(norm_fine / T)``,
    ``Q = softmax(norm_coarse / T)``, then ``sum P log(P/Q)``
    (``"fine_to_coarse"``) or ``sum Q log(Q/P)`` (``"coarse_to_fine"``).
    ``reduction``: ``"batchmean"`` (mean over samples), ``"sum"``, ``"none"`` (``[B]``).

    Policies: an empty batch gives a zero loss (and zero gradients); a NaN or
    Inf in a sample's features makes that sample's loss NaN (other samples are
    unaffected), as PyTorch's own losses propagate NaN. ``check_index`` as in
    :func:`hcam_ops.cam_gather`.

    Mixed dtypes (e.g. bfloat16 features from autocast with float32 head
    weights) are promoted to the common dtype of the features and all weights
    (``torch.promote_types``) before the kernel, with or without autocast, as
    torch's losses run in float32 under autocast: the loss is in that dtype and
    each input's gradient in its own dtype.
    """
    names = ([f"weights[{l}]" for l in range(len(weights))], [f"indices[{l}]" for l in range(len(indices))])
    return _cam_kl(
        "hierarchical_cam_kl_loss",
        names,
        features,
        weights,
        indices,
        temperature,
        eps,
        direction,
        reduction,
        check_index,
    )


def _cam_kl(op, names, features, weights, indices, temperature, eps, direction, reduction, check_index):
    """The loss, its errors naming ``op`` and the per-level tensors as the
    caller named them (``names``: the weights' and the indices')."""
    weight_names, index_names = names
    B, N, C = _checks.check_features(features, op)
    if len(weights) != len(indices):
        raise ValueError(f"{op}: got {len(weights)} weights and {len(indices)} index tensors; one of each per level")
    if not 2 <= len(weights) <= MAX_LEVELS:
        raise ValueError(f"{op}: needs 2 to {MAX_LEVELS} levels, got {len(weights)}")
    weights = [_checks.as_weight_matrix(w, features, C, op, weight_names[l]) for l, w in enumerate(weights)]
    for l, index in enumerate(indices):
        _checks.check_index(index, features, B, op, index_names[l], dims=(1,))
        if check_index:
            _checks.check_index_range(index, weights[l].shape[0], op, index_names[l])
    temperature = _checks.check_temperature(temperature, op)
    eps = _checks.check_eps(eps, op)
    _checks.check_choice(direction, _checks.DIRECTIONS, op, "direction")
    _checks.check_choice(reduction, ("batchmean", "sum", "none"), op, "reduction")
    features, *weights = _checks.promote_floats(op, {"features": features, **dict(zip(weight_names, weights))})
    kl, _ = torch.ops.hcam_ops.cam_kl(features, weights, list(indices), temperature, eps, direction)
    return reduce_rows(kl, reduction, op)


def two_level_signature(hierarchical) -> inspect.Signature:
    """The signature of the two-level form of a hierarchical CAM-KL loss: its
    (weights, indices) as (fine_weight, coarse_weight, fine_index,
    coarse_index), its other parameters and defaults as they are."""
    sig = inspect.signature(hierarchical)
    features, _weights, _indices, *options = sig.parameters.values()
    pair = [
        inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation="torch.Tensor")
        for name in ("fine_weight", "coarse_weight", "fine_index", "coarse_index")
    ]
    return sig.replace(parameters=[features, *pair, *options])


def cam_kl_loss(features, fine_weight, coarse_weight, fine_index, coarse_index, *options, **keywords) -> torch.Tensor:
    """Hierarchical CAM-consistency loss between a fine and a coarse head.

    Args:
        features: ``[B, N, C]`` token features or a ``[B, C, H, W]`` map.
        fine_weight, coarse_weight: the heads' weights, ``[K, C]`` or ``[K, C, 1, 1]``.
        fine_index, coarse_index: int64 ``[B]``: the class whose map is taken
            (ground truth, or the argmax of that head's logits).
        temperature, eps, direction, reduction: see :func:`hierarchical_cam_kl_loss`.

    Gradients flow to ``features`` and ``fine_weight`` only: the coarse map is
    a fixed teacher. Mixed dtypes (e.g. bfloat16 features under autocast with
    float32 head weights) are promoted to their common dtype before the kernel;
    the loss is in that dtype, each gradient in its input's dtype.
    """
    args = _HIERARCHICAL.bind(features, [fine_weight, coarse_weight], [fine_index, coarse_index], *options, **keywords)
    args.apply_defaults()
    names = (["fine_weight", "coarse_weight"], ["fine_index", "coarse_index"])
    return _cam_kl("cam_kl_loss", names, *args.arguments.values())


# temperature, eps, direction, reduction and check_index: hierarchical_cam_kl_loss's, defaults and all.
_HIERARCHICAL = inspect.signature(hierarchical_cam_kl_loss)
cam_kl_loss.__signature__ = two_level_signature(hierarchical_cam_kl_loss)
