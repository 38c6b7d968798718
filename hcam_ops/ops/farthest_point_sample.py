"""hcam_ops.farthest_point_sample: batched farthest point sampling in feature
space (the seeds of CAST's graph pooling), one block per sample on CUDA."""

from __future__ import annotations

import torch

from . import _checks

_OP = "farthest_point_sample"


@torch.library.register_fake("hcam_ops::farthest_point_sample")
def _fake(points, k, start=0, mask=None):
    return points.new_empty((points.shape[0], k), dtype=torch.int64)


def farthest_point_sample(
    points: torch.Tensor, k: int, start: int = 0, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Indices ``[B, k]`` (int64) of ``k`` points of ``points [B, N, C]``
    picked greedily: first ``start``, then each time the point whose squared
    Euclidean distance to the picked set is largest.

    Rules (both devices): distances accumulate in float32 (float64 for float64
    points); a tie goes to the lower index. ``mask [B, N]`` (bool, True =
    valid) excludes points; a masked ``start`` is replaced by the first valid
    point. When every valid point has been picked, the remaining picks repeat
    the lowest-index valid point (distance 0). Not differentiable.
    """
    _checks.check_float(points, _OP, "points")
    if points.dim() != 3:
        raise ValueError(f"{_OP}: points must be [B, N, C], got shape {tuple(points.shape)}")
    B, N, C = points.shape
    if N == 0 or C == 0:
        raise ValueError(f"{_OP}: points need N > 0 and C > 0, got shape {tuple(points.shape)}")
    k, start = _checks.check_int(k, _OP, "k"), _checks.check_int(start, _OP, "start")
    if not 1 <= k <= N:
        raise ValueError(f"{_OP}: k must be in [1, N = {N}], got {k}")
    if not 0 <= start < N:
        raise IndexError(f"{_OP}: start must be in [0, N = {N}), got {start}")
    if mask is not None:
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != (B, N):
            raise ValueError(f"{_OP}: mask must be a bool [B, N] = [{B}, {N}] tensor")
        _checks.check_same_device(points, mask, _OP, "mask", "points")
    return torch.ops.hcam_ops.farthest_point_sample(points.detach(), k, start, mask)
