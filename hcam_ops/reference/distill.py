"""Plain loop versions of hcam_ops.distill: one object, one cell at a time."""

from __future__ import annotations

import math

import torch


def gaussian_heatmaps(centers, sigmas, labels, num_classes, feat_shape):
    H, W = feat_shape
    out = torch.zeros(num_classes, H, W)
    sig = torch.as_tensor(sigmas, dtype=torch.float64).expand(len(centers)).tolist()
    for (px, py), s, k in zip(torch.as_tensor(centers).tolist(), sig, torch.as_tensor(labels).tolist()):
        for y in range(H):
            for x in range(W):
                v = math.exp(-((x - px) ** 2 + (y - py) ** 2) / (2 * s * s))
                out[k, y, x] = max(float(out[k, y, x]), v)
    return out


def region_masks(teacher_heatmap, gt_heatmap, threshold=0.1):
    t = teacher_heatmap.amax(1) if teacher_heatmap.dim() == 4 else teacher_heatmap
    g = gt_heatmap.amax(1) if gt_heatmap.dim() == 4 else gt_heatmap
    out = {k: torch.zeros(t.shape, dtype=torch.bool) for k in ("tp", "fp", "fn", "tn")}
    for idx in range(t.numel()):
        i = (t.flatten()[idx] > threshold, g.flatten()[idx] > threshold)
        key = {(True, True): "tp", (True, False): "fp", (False, True): "fn", (False, False): "tn"}[tuple(map(bool, i))]
        out[key].view(-1)[idx] = True
    return out
