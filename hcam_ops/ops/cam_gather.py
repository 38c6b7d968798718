"""hcam_ops.cam_gather: class activation maps of chosen classes (docs/ops/cam.md#cam_gather)."""

from __future__ import annotations

import torch

from . import _checks
from ._layout import empty_features_grad, positions

_OP = "cam_gather"


@torch.library.register_fake("hcam_ops::cam_gather")
def _cam_gather_fake(features, weight, index):
    return features.new_empty((features.shape[0], index.shape[1], positions(features)))


@torch.library.register_fake("hcam_ops::cam_gather_backward")
def _cam_gather_backward_fake(grad, features, weight, index, output_mask):
    _checks.check_same_device_fake(grad, "grad", features, "features", "cam_gather_backward")
    B, L, N = features.shape[0], index.shape[1], positions(features)
    torch._check(
        tuple(grad.shape) == (B, L, N),
        lambda: f"cam_gather_backward: grad must be [B, L, N] = [{B}, {L}, {N}], got {tuple(grad.shape)}",
    )
    want_features, want_weight = output_mask
    return (
        empty_features_grad(features) if want_features else None,
        weight.new_empty(weight.shape) if want_weight else None,
    )


def _setup_context(ctx, inputs, output):
    features, weight, index = inputs
    ctx.save_for_backward(features, weight, index)


def _backward(ctx, grad):
    features, weight, index = ctx.saved_tensors
    # A gradient not asked for (a detached input) is not computed: None.
    grad_features, grad_weight = torch.ops.hcam_ops.cam_gather_backward(
        grad, features, weight, index, list(ctx.needs_input_grad[:2])
    )
    return grad_features, grad_weight, None


torch.library.register_autograd("hcam_ops::cam_gather", _backward, setup_context=_setup_context)


def cam_gather(
    features: torch.Tensor, weight: torch.Tensor, index: torch.Tensor, *, check_index: bool = True
) -> torch.Tensor:
    """Class activation maps: ``cam[b, n] = <features[b, n, :], weight[index[b], :]>``.

    Args:
        features: ``[B, N, C]`` tokens or a ``[B, C, H, W]`` map (``N = H*W``,
            position ``h*W + w``), any float dtype; read in place when
            contiguous, channels-last, or a transposed ``[B, C, N]`` buffer.
        weight: the head's weight, ``[K, C]`` (linear) or ``[K, C, 1, 1]`` (1x1 conv),
            on the device of ``features``. No bias: a constant per map.
        index: int64 class per sample, ``[B]`` (gives ``[B, N]``) or ``[B, L]``
            (gives ``[B, L, N]``).
        check_index: raise ``IndexError`` for a class outside ``[0, K)``. On CUDA
            this is one device sync; with ``False`` (and under ``torch.compile``)
            such a sample's map is NaN instead (the CPU kernel always raises).

    Gradients flow to ``features`` and ``weight``; the weight gradient sums over
    samples sharing a class in a fixed order (deterministic).

    Mixed dtypes (e.g. bfloat16 features from autocast with a float32 head
    weight) are promoted to their common dtype (``torch.promote_types``) before
    the kernel, with or without autocast: the maps come out in that dtype and
    each input's gradient in its own dtype.
    """
    B, N, C = _checks.check_features(features, _OP)
    weight = _checks.as_weight_matrix(weight, features, C, _OP, "weight")
    _checks.check_index(index, features, B, _OP, "index", dims=(1, 2))
    if check_index:
        _checks.check_index_range(index, weight.shape[0], _OP, "index")
    features, weight = _checks.promote_floats(_OP, {"features": features, "weight": weight})
    single = index.dim() == 1
    cams = torch.ops.hcam_ops.cam_gather(features, weight, index.unsqueeze(1) if single else index)
    return cams.squeeze(1) if single else cams
