"""Plain-PyTorch DistillBEV masks on the BEV grid (docs/ops/fgd.md#bev_masks_from_boxes):
one box at a time over the whole grid, as the published ``foreground_scale_mask`` does,
with the kernels' operations in the kernels' order and dtype (so the same cells, bit for
bit, on box edges too)."""

from __future__ import annotations

import math

import torch


def _pair(v):
    if isinstance(v, torch.Tensor):
        v = v.tolist()
    if isinstance(v, (int, float)):
        return float(v), float(v)
    a, b = v
    return float(a), float(b)


def bev_masks_from_boxes(
    boxes,
    pc_range,
    cell_size,
    feat_shape,
    *,
    scale_mask: str = "combine",
    background: str = "logical_not",
    bg_extend_length: float = 0.0,
    bg_extend_weight: float = 0.0,
    check_boxes: bool = True,
):
    H, W = (int(v) for v in feat_shape)
    boxes = list(boxes)
    pc = pc_range.tolist() if isinstance(pc_range, torch.Tensor) else list(pc_range)
    cell_x, cell_y = _pair(cell_size)
    dtype = torch.float64 if all(b.dtype == torch.float64 for b in boxes) else torch.float32

    def t(v):
        return torch.tensor(v, dtype=dtype)

    # Cell (h, w) is the point (x_min + w * cell_x, y_min + h * cell_y): the
    # low corner of the cell, as the published meshgrid of i * voxel * osf + pc_range;
    # the product rounded to the dtype, then the sum.
    px = (torch.arange(W, dtype=dtype) * t(cell_x) + t(float(pc[0]))).expand(H, W)
    py = (torch.arange(H, dtype=dtype) * t(cell_y) + t(float(pc[1])))[:, None].expand(H, W)
    cell_area = t(cell_x) * t(cell_y)
    extend = t(cell_x) * t(float(bg_extend_length))
    weight = t(float(bg_extend_weight))
    extend_on = bg_extend_length > 0 and bg_extend_weight > 0
    fgs, bgs = [], []
    for b in boxes:
        b = b.detach().to("cpu", dtype)
        if b.shape[1] >= 7:
            b = b[:, [0, 1, 3, 4, 6]]
        in_box = torch.zeros(H, W, dtype=torch.bool)
        in_ring = torch.zeros(H, W, dtype=torch.bool)
        box_scale = torch.zeros(H, W, dtype=dtype)
        ring_scale = torch.zeros(H, W, dtype=dtype)
        # per box, in the dtype (a 1-d divisor: torch divides by a 0-d CPU tensor through its
        # reciprocal); the square root correctly rounded (torch.sqrt of float32 may be an ulp off)
        ratios = cell_area / (b[:, 2] * b[:, 3])
        for (x, y, dx, dy, yaw), ratio in zip(b, ratios):
            # cos and sin in double with the C library's (as the kernels take them from the host),
            # rounded once to the dtype
            c, s = t(math.cos(float(yaw))), t(math.sin(float(yaw)))
            ex, ey = px - x, py - y
            # the point in the box frame: rotated by +yaw (the published corners are rotated by -yaw);
            # every product rounded on its own, then the sum, as the kernels do (no fused multiply-add)
            u = (c * ex - s * ey).abs()
            v = (s * ex + c * ey).abs()
            inside = (u < dx / 2) & (v < dy / 2)
            box_scale = torch.where(inside & ~in_box, t(math.sqrt(ratio)), box_scale)  # the first box wins
            in_box |= inside
            if extend_on:
                ring = (u < (dx + extend) / 2) & (v < (dy + extend) / 2)
                ring_scale = torch.where(ring & ~in_ring, ratio, ring_scale)
                in_ring |= ring
        fm = in_box.to(dtype)
        scale = box_scale
        if extend_on:
            fm = torch.maximum(fm, in_ring.to(dtype) * weight)
            scale = torch.where(in_ring, ring_scale, box_scale)
        count = int((fm == 0).sum())
        bg_scale = (t([1.0]) / t([float(count)]))[0] if count else t(0.0)
        if scale_mask == "combine":
            a = bsc = torch.maximum(scale, bg_scale)
        elif scale_mask == "separate":
            a, bsc = scale, bg_scale
        elif scale_mask == "bg_only":
            a = bsc = bg_scale
        else:
            a = bsc = t(1.0)
        bgw = (fm == 0).to(dtype) if background == "logical_not" else t(1.0) - fm
        fgs.append(fm * a)
        bgs.append(bgw * bsc)
    device = boxes[0].device if boxes else torch.device("cpu")
    fg = torch.stack(fgs) if fgs else torch.zeros(0, H, W, dtype=dtype)
    bg = torch.stack(bgs) if bgs else torch.zeros(0, H, W, dtype=dtype)
    return fg.to(device), bg.to(device)


__all__ = ["bev_masks_from_boxes"]
