"""Plain-PyTorch DistillBEV masks on the BEV grid (docs/ops/fgd.md#bev_masks_from_boxes):
one box at a time over the whole grid, as the published ``foreground_scale_mask`` does,
its inside test in float32 operation for operation as published (so the same cells, bit
for bit, on box edges too), the scales in the boxes' dtype."""

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


# box_np_ops' corner order (a, b, e) and faces, for the published inside test.
_CORNERS = [(0, 0, 0), (0, 0, 1), (0, 1, 1), (0, 1, 0), (1, 0, 0), (1, 0, 1), (1, 1, 1), (1, 1, 0)]
_FACES = [(0, 1, 2), (7, 6, 5), (0, 3, 7), (1, 5, 6), (0, 4, 5), (3, 2, 6)]


def _f32(v):
    return torch.tensor(v, dtype=torch.float32)


def _inside(px, py, x, y, dx, dy, c, s):
    """The published points_in_rbbox (mmdet3d v0.17 box_np_ops, z_axis=2,
    origin=(0.5, 0.5, 0); the box's z = 0, dz = 1, the points' z = 0.5), in
    float32, operation for operation: corners, faces, normals and offsets, then
    outside as soon as a face's sign is >= 0. Every argument a float32 tensor."""
    zero, one = _f32(0.0), _f32(1.0)
    corners = []
    for a, b, e in _CORNERS:
        lx, ly, lz = dx * _f32(a - 0.5), dy * _f32(b - 0.5), one * _f32(e - 0.0)
        corners.append(
            (
                ((lx * c + ly * s) + lz * zero) + x,
                ((lx * -s + ly * c) + lz * zero) + y,
                ((lx * zero + ly * zero) + lz * one) + zero,
            )
        )
    outside = torch.zeros(px.shape, dtype=torch.bool)
    for i0, i1, i2 in _FACES:
        p0, p1, p2 = corners[i0], corners[i1], corners[i2]
        v0 = [p0[k] - p1[k] for k in range(3)]
        v1 = [p1[k] - p2[k] for k in range(3)]
        n = (v0[1] * v1[2] - v0[2] * v1[1], v0[2] * v1[0] - v0[0] * v1[2], v0[0] * v1[1] - v0[1] * v1[0])
        d = -((n[0] * p0[0] + n[1] * p0[1]) + n[2] * p0[2])
        sign = ((px * n[0] + py * n[1]) + _f32(0.5) * n[2]) + d
        outside |= sign >= 0
    return ~outside


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
    # low corner of the cell, as the published meshgrid of i * voxel * osf + pc_range,
    # in float32 as there (the inside test's precision): the product rounded, then the sum.
    px = (torch.arange(W, dtype=torch.float32) * _f32(cell_x) + _f32(float(pc[0]))).expand(H, W)
    py = (torch.arange(H, dtype=torch.float32) * _f32(cell_y) + _f32(float(pc[1])))[:, None].expand(H, W)
    cell_area = t(cell_x) * t(cell_y)
    extend = t(cell_x) * t(float(bg_extend_length))
    e32 = extend.to(torch.float32)
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
        for row, ratio in zip(b, ratios):
            x, y, dx, dy, yaw = row.to(torch.float32)
            # cos and sin of the float32 yaw in double with the C library's (as the kernels
            # take them from the host), rounded once to float32
            c, s = _f32(math.cos(float(yaw))), _f32(math.sin(float(yaw)))
            inside = _inside(px, py, x, y, dx, dy, c, s)
            box_scale = torch.where(inside & ~in_box, t(math.sqrt(ratio)), box_scale)  # the first box wins
            in_box |= inside
            if extend_on:
                ring = _inside(px, py, x, y, dx + e32, dy + e32, c, s)
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
