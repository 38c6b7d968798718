"""Plain-PyTorch FGD masks from boxes (docs/ops/fgd.md#fgd_masks_from_boxes): one box at a time."""

from __future__ import annotations

import torch


def fgd_masks_from_boxes(boxes, img_shape, feat_shape, *, check_boxes: bool = True, padded: bool = False):
    H, W = (int(v) for v in feat_shape)
    boxes = list(boxes)
    if padded:  # mmyolo / mmrazor gt_info: all-zero rows are padding
        boxes = [b[(b != 0).any(dim=1)] for b in boxes]
    dtype = torch.float64 if all(b.dtype == torch.float64 for b in boxes) else torch.float32
    if isinstance(img_shape, torch.Tensor):
        shapes = img_shape.reshape(-1, 2).tolist()
    elif len(img_shape) == 2 and not isinstance(img_shape[0], (tuple, list)):
        shapes = [tuple(img_shape)]
    else:
        shapes = [tuple(s) for s in img_shape]
    if len(shapes) == 1:
        shapes = shapes * len(boxes)
    fg = torch.zeros(len(boxes), H, W, dtype=dtype)
    bg = torch.zeros(len(boxes), H, W, dtype=dtype)
    for i, b in enumerate(boxes):
        b = b.detach().to("cpu", dtype)
        img_h = torch.tensor(shapes[i][0], dtype=dtype)
        img_w = torch.tensor(shapes[i][1], dtype=dtype)
        for x1, y1, x2, y2 in b:
            x0, y0 = torch.floor(x1 / img_w * W), torch.floor(y1 / img_h * H)
            xe, ye = torch.ceil(x2 / img_w * W), torch.ceil(y2 / img_h * H)
            edges = torch.stack([x0, y0, xe, ye])
            if not bool(torch.isfinite(edges).all()):
                continue  # a non-finite box covers nothing
            inv_area = 1 / ((ye + 1 - y0) * (xe + 1 - x0))  # in dtype, before clipping
            if inv_area.abs() < torch.finfo(dtype).tiny:  # past the dtype's range: clip to the image first
                x1, x2 = x1.clamp(0, img_w), x2.clamp(-img_w, img_w)
                y1, y2 = y1.clamp(0, img_h), y2.clamp(-img_h, img_h)
                x0, y0 = torch.floor(x1 / img_w * W), torch.floor(y1 / img_h * H)
                xe, ye = torch.ceil(x2 / img_w * W), torch.ceil(y2 / img_h * H)
                edges = torch.stack([x0, y0, xe, ye])
                inv_area = 1 / ((ye + 1 - y0) * (xe + 1 - x0))
            # Edges beyond the map are clipped to it (int() of 1e30 is exact but needless).
            x0, y0, xe, ye = (int(v) for v in edges.clamp(-1, max(H, W)))
            ya, yb = max(y0, 0), min(ye, H - 1)
            xa, xb = max(x0, 0), min(xe, W - 1)
            if ya <= yb and xa <= xb:
                cell = fg[i, ya : yb + 1, xa : xb + 1]
                fg[i, ya : yb + 1, xa : xb + 1] = torch.maximum(cell, inv_area)
        empty = fg[i] == 0
        count = int(empty.sum())
        if count:
            bg[i] = empty.to(dtype) / torch.tensor(count, dtype=dtype)
    device = boxes[0].device if boxes else torch.device("cpu")
    return fg.to(device), bg.to(device)


__all__ = ["fgd_masks_from_boxes"]
