"""DistillBEV's region decomposition (docs/ops/fgd.md#region-decomposition): each cell is a true or
false positive or negative of the teacher against the ground truth."""

from __future__ import annotations

import torch

REGIONS = ("tp", "fp", "fn", "tn")


def _per_cell(heatmap: torch.Tensor) -> torch.Tensor:
    """``[B, H, W]`` from ``[B, H, W]`` or ``[B, K, H, W]`` (max over classes)."""
    if heatmap.dim() == 4:
        return heatmap.amax(1)
    if heatmap.dim() != 3:
        raise ValueError(f"region_masks: heatmaps must be [B, H, W] or [B, K, H, W], got {tuple(heatmap.shape)}")
    return heatmap


def region_masks(
    teacher_heatmap: torch.Tensor, gt_heatmap: torch.Tensor, threshold: float = 0.1
) -> dict[str, torch.Tensor]:
    """Boolean ``[B, H, W]`` masks ``tp``, ``fp``, ``fn``, ``tn``: teacher
    above ``threshold`` and ground truth above it (tp), teacher only (fp),
    ground truth only (fn), neither (tn). They partition the cells."""
    t, g = _per_cell(teacher_heatmap.detach()), _per_cell(gt_heatmap.detach())
    if t.shape != g.shape:
        raise ValueError(f"region_masks: teacher {tuple(t.shape)} and ground-truth {tuple(g.shape)} heatmaps differ")
    tp, gp = t > threshold, g > threshold
    return {"tp": tp & gp, "fp": tp & ~gp, "fn": ~tp & gp, "tn": ~tp & ~gp}


def region_weights(
    teacher_heatmap: torch.Tensor,
    gt_heatmap: torch.Tensor,
    threshold: float = 0.1,
    weights: dict[str, float] | None = None,
) -> torch.Tensor:
    """Per-cell weight ``[B, H, W]``: each region's weight (default 1 for all;
    the docs leave them to the user) on its cells. Multiply the FGD masks by
    it to weight the feature loss per region."""
    w = {k: 1.0 for k in REGIONS}
    if weights:
        unknown = set(weights) - set(REGIONS)
        if unknown:
            raise ValueError(f"region_weights: unknown regions {sorted(unknown)}; use {REGIONS}")
        w.update(weights)
    masks = region_masks(teacher_heatmap, gt_heatmap, threshold)
    out = torch.zeros(masks["tp"].shape, device=masks["tp"].device)
    for k in REGIONS:
        out = torch.where(masks[k], torch.tensor(float(w[k]), device=out.device), out)
    return out
