"""DistillBEV's false-positive region (docs/ops/fgd.md#false-positives): the
cells where the teacher fires and the ground truth does not, outside the
boxes' foreground, each with a scale so every sample (``"average"``) or every
connected FP region (``"dfs"``) weighs one in total."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

FP_SCALE_MODES = ("average", "dfs")


def _per_cell(heatmap: torch.Tensor, name: str) -> torch.Tensor:
    """``[B, 1, h, w]``: the max over classes of ``[B, K, h, w]``, or ``[B, h, w]`` as is."""
    if not isinstance(heatmap, torch.Tensor) or heatmap.dim() not in (3, 4):
        shape = tuple(heatmap.shape) if isinstance(heatmap, torch.Tensor) else type(heatmap).__name__
        raise ValueError(f"false_positive_masks: {name} must be [B, h, w] or [B, K, h, w], got {shape}")
    h = heatmap.detach()
    return h.amax(1, keepdim=True) if h.dim() == 4 else h[:, None]


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """As the published code: max-pooled down where larger, repeated up where smaller."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if x.shape[-2] >= size[0] and x.shape[-1] >= size[1]:
        return F.adaptive_max_pool2d(x.float(), size)
    return F.interpolate(x.float(), size=size, mode="nearest")


def _component_scale(fp: np.ndarray) -> np.ndarray:
    """``1 / size`` of each cell's 4-connected FP component (0 off the FP cells)."""
    import cv2

    count, labels = cv2.connectedComponents(fp.astype(np.uint8), connectivity=4)
    sizes = np.bincount(labels.ravel(), minlength=count).astype(np.float64)
    scale = np.where(fp, 1.0 / np.maximum(sizes[labels], 1.0), 0.0)
    return scale


def false_positive_masks(
    teacher_heatmap: torch.Tensor,
    gt_heatmap: torch.Tensor,
    foreground: torch.Tensor,
    *,
    output_threshold: float,
    groundtruth_threshold: float | None = None,
    scale_mode: str = "average",
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(fp, fp_scale)``, each ``[B, H, W]`` on ``foreground``'s device, in
    its float dtype (float32 for a bool or integer foreground).

    Args:
        teacher_heatmap: the teacher's class probabilities ``[B, K, h, w]``
            (or ``[B, h, w]``), already through a sigmoid; max over classes.
        gt_heatmap: the ground-truth heatmap, same layout; resized to the
            teacher's size (max-pooled down, repeated up).
        foreground: ``[B, H, W]`` (or ``[B, 1, H, W]``): the boxes'
            foreground; FP cells never overlap it.
        output_threshold: the teacher fires where its heatmap is above it.
        groundtruth_threshold: the ground truth is absent where its heatmap
            is below it (``None``: ``output_threshold``).
        scale_mode: ``"average"``: ``1 / #FP`` per sample; ``"dfs"``:
            ``1 / size`` of the cell's 4-connected FP component. (The
            published breadth-first search counts a cell once per neighbour
            that queued it, over-counting components with cycles; we count
            each cell once.)
    """
    if scale_mode not in FP_SCALE_MODES:
        raise ValueError(f"false_positive_masks: fp_scale_mode must be one of {FP_SCALE_MODES}, got {scale_mode!r}")
    gt_thr = output_threshold if groundtruth_threshold is None else groundtruth_threshold
    t = _per_cell(teacher_heatmap, "teacher_heatmap")
    g = _resize(_per_cell(gt_heatmap, "gt_heatmap"), tuple(t.shape[-2:]))
    fg = foreground.reshape(foreground.shape[0], 1, *foreground.shape[-2:])
    if t.shape[0] != fg.shape[0] or g.shape[0] != fg.shape[0]:
        raise ValueError(
            f"false_positive_masks: batch sizes differ: teacher_heatmap {t.shape[0]}, gt_heatmap {g.shape[0]}, "
            f"foreground {fg.shape[0]}"
        )
    fp = ((g < gt_thr) & (t > output_threshold)).float()
    fp = _resize(fp, tuple(fg.shape[-2:])).to(fg.device)
    dtype = fg.dtype if fg.is_floating_point() else torch.float32
    fp = ((fg == 0) & (fp > 0)).to(dtype)[:, 0]
    if scale_mode == "average":
        n = fp.sum((1, 2), keepdim=True)
        scale = torch.where(fp > 0, 1.0 / n.clamp(min=1.0), torch.zeros_like(fp))
    else:
        cells = fp.cpu().numpy() > 0
        scale = torch.from_numpy(np.stack([_component_scale(c) for c in cells])).to(fp.device, dtype)
    return fp, scale


__all__ = ["FP_SCALE_MODES", "false_positive_masks"]
