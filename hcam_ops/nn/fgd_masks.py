"""The per-cell weights each level of FGDLoss distils with: FGD's
rectangles, DistillBEV's BEV masks (its published order of foreground,
Gaussian variants, background, false positives and scaling) and our region
weights. :class:`FGDMasks` is a base of FGDLoss and reads the mask settings
its ``__init__`` stores."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..distill.false_positives import false_positive_masks
from ..distill.gaussian_foreground import foreground_variant, gaussian_foreground
from ..distill.regions import region_weights
from ..ops.bev_masks import bev_masks_from_boxes
from ..ops.fgd_masks import fgd_masks_from_boxes
from ._fgd_levels import _at, _levels


def boxes_on_pixel_grid(boxes, img_shape, feat_shape):
    """2-D boxes ``(x1, y1, x2, y2)`` in pixels as BEV boxes ``(x, y, dx, dy,
    yaw=0)`` on a grid whose cells are ``img / feat`` pixels, from (0, 0):
    how DistillBEV's masks apply to an image detector."""
    if isinstance(img_shape, torch.Tensor):
        img_shape = img_shape.reshape(-1, 2)[0].tolist()
    img_h, img_w = (float(v) for v in (img_shape[0] if isinstance(img_shape[0], (tuple, list)) else img_shape))
    H, W = feat_shape
    out = []
    for i, b in enumerate(boxes):
        if not isinstance(b, torch.Tensor) or b.dim() != 2 or b.shape[1] != 4:
            shape = tuple(b.shape) if isinstance(b, torch.Tensor) else type(b).__name__
            raise ValueError(f"FGDLoss: boxes[{i}] must be [n, 4] (x1, y1, x2, y2), got {shape}")
        b = b.detach()
        centre, size = (b[:, :2] + b[:, 2:]) / 2, b[:, 2:] - b[:, :2]
        out.append(torch.cat([centre, size, torch.zeros_like(size[:, :1])], dim=1))
    return out, (0.0, 0.0), (img_w / W, img_h / H)


def _extend_scale(scale):
    if scale is None:
        raise ValueError("FGDLoss: scale_mask '*_extend' needs a Gaussian foreground_mask")
    return scale


class FGDMasks:
    def _fp(self, level, kw, foreground):
        """DistillBEV's FP cells and their scale (``None, None`` while the term is off)."""
        if not (self.fp_weight > 0 and self.epoch >= self.fp_epoch):
            return None, None
        heat_t, heat_g = kw.get("teacher_heatmap"), kw.get("gt_heatmap")
        if heat_t is None or heat_g is None:
            raise ValueError("FGDLoss: fp_weight > 0 needs teacher_heatmap and gt_heatmap")
        return false_positive_masks(_at(heat_t, level), _at(heat_g, level), foreground, **self.fp)

    def _fgd_masks(self, level, shape, kw, check):
        """FGD's rectangles (or the given masks); with the FP term (ours on FGD
        masks) FP cells leave the background, which is normalised again."""
        fg_mask, bg_mask = kw.get("fg_mask"), kw.get("bg_mask")
        if fg_mask is not None or bg_mask is not None:
            if fg_mask is None or bg_mask is None:
                raise ValueError("FGDLoss: give both fg_mask and bg_mask, or boxes")
            fg, bg = _levels(fg_mask), _levels(bg_mask)
            if len(fg) != self.num_levels or len(bg) != self.num_levels:
                raise ValueError(f"FGDLoss: masks for {len(fg)} levels, model has {self.num_levels}")
            return fg[level], bg[level], None
        boxes, img_shape = kw.get("boxes"), kw.get("img_shape")
        if boxes is None or img_shape is None:
            raise ValueError("FGDLoss: needs boxes and img_shape, or fg_mask and bg_mask")
        fg, bg = fgd_masks_from_boxes(boxes, img_shape, shape, check_boxes=check)
        fp, fp_scale = self._fp(level, kw, fg)
        if fp is None:
            return fg, bg, None
        keep = (bg > 0) & (fp == 0)
        bg = keep.to(bg.dtype) / keep.sum((1, 2), keepdim=True).clamp(min=1).to(bg.dtype)
        return fg, bg, fp * fp_scale

    def _bev_boxes(self, level, shape, kw):
        if kw.get("bev_boxes") is not None:
            if kw.get("bev_grid") is None:
                raise ValueError("FGDLoss: bev_boxes need bev_grid=(pc_range, cell_size)")
            pc_range, cell = kw["bev_grid"]
            if cell is None:
                # As published (osf = grid_size // W): each level's cells span the range.
                r = [float(v) for v in (pc_range.tolist() if isinstance(pc_range, torch.Tensor) else pc_range)]
                if len(r) != 6:
                    raise ValueError("FGDLoss: bev_grid=(pc_range, None) needs the 6-number point-cloud range")
                cell = ((r[3] - r[0]) / shape[1], (r[4] - r[1]) / shape[0])
            elif isinstance(cell, list):
                cell = _at(cell, level) if len(cell) == self.num_levels else cell
            return kw["bev_boxes"], pc_range, cell
        if kw.get("boxes") is None or kw.get("img_shape") is None:
            raise ValueError("FGDLoss: needs boxes and img_shape, bev_boxes and bev_grid, or fg_mask and bg_mask")
        return boxes_on_pixel_grid(kw["boxes"], kw["img_shape"], shape)

    def _bev_masks(self, level, shape, kw, check):
        """DistillBEV's masks in the published order: the box foreground and its
        scale (the op), the Gaussian foreground variant, the background, the FP
        cells leaving it (its scale recomputed), then ``scale_mask``."""
        boxes, pc_range, cell = self._bev_boxes(level, shape, kw)
        length, weight = self.bg_extend
        args = (boxes, pc_range, cell, shape)
        extend = dict(bg_extend_length=length, bg_extend_weight=weight)
        gt_fg, _ = bev_masks_from_boxes(*args, scale_mask="none", check_boxes=check, **extend)
        scaled, _ = bev_masks_from_boxes(*args, scale_mask="separate", check_boxes=False, **extend)
        fg_scale = torch.where(gt_fg > 0, scaled / gt_fg.clamp(min=1e-30), torch.zeros_like(scaled))
        B, H, W = gt_fg.shape
        n_bg = H * W - (gt_fg != 0).sum((1, 2), keepdim=True).to(gt_fg.dtype)
        scale2 = None
        if self.foreground_mask == "gt":
            foreground = gt_fg
        else:
            heat, scale2 = gaussian_foreground(*args, **self.gaussian)
            foreground = foreground_variant(
                self.foreground_mask,
                gt_fg,
                heat.to(gt_fg.dtype),
                gauss_fg_weight=self.gauss_fg_weight,
                fg_weight=self.weights["fg_weight"][level],
                bg_weight=self.weights["bg_weight"][level],
            )
            scale2 = scale2.to(gt_fg.dtype)
        bg = (foreground == 0).to(gt_fg.dtype) if self.background_mask == "logical_not" else 1 - foreground
        fp, fp_scale = self._fp(level, kw, foreground)
        if fp is not None:
            fp = fp.to(gt_fg.dtype)
            bg = bg * (fp == 0)
            n_bg = H * W - foreground.sum((1, 2), keepdim=True) - fp.sum((1, 2), keepdim=True)
        bg_scale = torch.where(n_bg > 0, 1.0 / n_bg.clamp(min=1e-30), torch.zeros_like(n_bg)).expand(B, H, W)
        mode = self.scale_mask
        if mode in ("combine_gt", "combine_extend"):
            s = torch.maximum(fg_scale if mode == "combine_gt" else _extend_scale(scale2), bg_scale)
            fg, bg = foreground * s, bg * s
        elif mode == "separate_gt":
            fg, bg = foreground * fg_scale, bg * bg_scale
        elif mode == "separate_extend":
            fg, bg = foreground * _extend_scale(scale2), bg * bg_scale
        elif mode == "bg_only":
            fg, bg = foreground * bg_scale, bg * bg_scale
        else:
            fg = foreground
        return fg, bg, None if fp is None else fp * fp_scale.to(fp.dtype)

    def _level_masks(self, level, shape, kw, check=True):
        """``(fg, bg, fp)`` per-cell weights ``[B, H, W]`` for one level (``fp`` may be ``None``)."""
        given = kw.get("fg_mask") is not None or kw.get("bg_mask") is not None
        if self.masks == "bev" and not given:
            fg, bg, fp = self._bev_masks(level, shape, kw, check)
        else:
            fg, bg, fp = self._fgd_masks(level, shape, kw, check)
        heat_t, heat_g = kw.get("teacher_heatmap"), kw.get("gt_heatmap")
        if self.region_weights is not None and heat_t is not None and heat_g is not None:
            r = region_weights(_at(heat_t, level), _at(heat_g, level), self.region_threshold, self.region_weights)
            r = F.interpolate(r[:, None], size=shape, mode="nearest")[:, 0].to(fg.dtype)
            B = r.shape[0]
            fg, bg = fg.reshape(B, *shape) * r, bg.reshape(B, *shape) * r
        return fg, bg, fp
