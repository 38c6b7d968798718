"""hcam_ops.segment_mean: per-superpixel averages of pixel features (the
tokens of a CAST backbone), with counts for the padding mask."""

from __future__ import annotations

import torch

from . import _checks

_OP = "segment_mean"


@torch.library.register_fake("hcam_ops::segment_mean")
def _forward_fake(x, segments, num_segments):
    B, _, _, C = x.shape
    return x.new_empty((B, num_segments, C)), x.new_empty((B, num_segments), dtype=torch.int64)


@torch.library.register_fake("hcam_ops::segment_mean_backward")
def _backward_fake(grad, x, segments, counts):
    for t, name in ((grad, "grad"), (counts, "counts")):
        _checks.check_same_device_fake(t, name, x, "x", "segment_mean_backward")
    B, C = x.shape[0], x.shape[3]
    torch._check(
        grad.dim() == 3 and grad.shape[0] == B and grad.shape[2] == C and tuple(counts.shape) == (B, grad.shape[1]),
        lambda: f"segment_mean_backward: grad [B, S, C] and counts [B, S] do not match x {tuple(x.shape)}",
    )
    return x.new_empty(x.shape)


def _setup_context(ctx, inputs, output):
    x, segments, _ = inputs
    _, counts = output
    ctx.mark_non_differentiable(counts)
    ctx.save_for_backward(x, segments, counts)


def _backward(ctx, grad_mean, _grad_counts):
    x, segments, counts = ctx.saved_tensors
    return torch.ops.hcam_ops.segment_mean_backward(grad_mean, x, segments, counts), None, None


torch.library.register_autograd("hcam_ops::segment_mean", _backward, setup_context=_setup_context)


def segment_mean(
    x: torch.Tensor, segments: torch.Tensor, num_segments: int, *, check_segments: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Average ``x [B, H, W, C]`` over each segment of ``segments [B, H, W]``
    (int32 or int64 ids in ``[0, num_segments)``).

    Returns ``(mean [B, S, C], counts [B, S] int64)``; an empty segment has a
    zero mean and count 0 (mask it with ``counts > 0``). Gradient reaches
    ``x``: each pixel gets its segment's gradient over its count. Sums run in
    pixel order on both devices (deterministic).

    ``check_segments`` raises ``IndexError`` for an id outside the range (one
    device sync on CUDA; skipped under ``torch.compile``); unchecked, such a
    pixel belongs to no segment and gets a zero gradient.
    """
    _checks.check_float(x, _OP, "x")
    if x.dim() != 4:
        raise ValueError(f"{_OP}: x must be [B, H, W, C] (channels last), got shape {tuple(x.shape)}")
    if not isinstance(segments, torch.Tensor) or segments.dtype not in (torch.int32, torch.int64):
        raise TypeError(
            f"{_OP}: segments must be an int32 or int64 tensor, got {getattr(segments, 'dtype', type(segments))}"
        )
    if tuple(segments.shape) != tuple(x.shape[:3]):
        raise ValueError(f"{_OP}: segments must be [B, H, W] = {list(x.shape[:3])}, got {list(segments.shape)}")
    _checks.check_same_device(x, segments, _OP, "segments")
    S = _checks.check_size(num_segments, _OP, "num_segments")
    B, _, _, C = x.shape
    _checks.check_output_size((B, S, C), x.dtype, _OP, "num_segments", S)
    if check_segments:
        _checks.check_index_range(segments, S, _OP, "segments", what="id")
    return _checks.call_allocating(_OP, "num_segments", S, torch.ops.hcam_ops.segment_mean, x, segments, S)
