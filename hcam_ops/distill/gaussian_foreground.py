"""DistillBEV's Gaussian foreground on the BEV grid, as qcraftai/distill-bev draws it.

``gaussian_foreground`` follows the published ``foreground_mask != 'gt'`` path of
``BEVDetDistill.fgd_distill_loss`` (``mmdet3d/models/detectors/bevdet_distill.py``
l.1019-1072): ``CenterHead.get_targets_single(..., custom_radius_func,
custom_scale_func=draw_scale)`` (``mmdet3d/models/dense_heads/centerpoint_head.py``
l.448-609), ``draw_heatmap_gaussian`` / ``gaussian_2d`` and the radius functions
``gaussian_radius``, ``centerpoint_radius_func1/2/3``, ``maxwh_radius_func``
(``mmdet3d/core/utils/gaussian.py`` l.6-124), and ``draw_scale``
(``bevdet_distill.py`` l.135-151). Per box, in cells: ``w = dx / cell_x``,
``l = dy / cell_y``, ``r = max(min_radius, int(radius_func((l, w), min_overlap)))``,
centre ``c = int((x - x_min) / cell_x), int((y - y_min) / cell_y)`` (truncation
toward zero, so a centre in ``(-1, 0)`` lands on cell 0; a box whose truncated
centre is off the map is skipped); an axis-aligned ``(2r + 1)``-square of
``exp(-(i^2 + j^2) / (2 sigma^2))``, ``sigma = (2r + 1) / 6``, values below
``eps(float64)`` (times the peak, 1) set to 0, clipped to the map and max-merged
over all boxes (the published ``foreground_mask2`` is the max over the class
channels of the per-class heatmaps, i.e. over all boxes). The scale map writes
``1 / ceil(l * w)`` as an elementwise max into the same clipped square. Yaw is
not used (the published Gaussians are axis-aligned).

``foreground_variant`` is the published choice of ``foreground_mask`` from the
box foreground (``bev_masks_from_boxes``'s ``fg``) and this heat map.

Deliberate deviations:

- Sizes and centres are divided once by ``cell_size = voxel_size *
  out_size_factor``; the published code divides by ``voxel_size`` and then by
  ``out_size_factor``. The two can differ by an ulp, which matters only when
  a size or centre falls on an integer (the truncations and the ``ceil``).
- The per-box numbers (sizes, radius, centre, scale value) are computed on the
  CPU in the working dtype (float32, or float64 when every box is float64), with
  the published operation order, so results do not depend on the device (the
  published code runs them on the boxes' device, where CUDA divides by a
  Python scalar as a multiplication by its reciprocal).
- float64 boxes give float64 maps throughout (the published Gaussian is made in
  float64 and stored in float32 always).
- ``radius_scale`` reaches ``maxwh``: the published code means to pass
  ``custom_radius_scale`` but tests ``hasattr(self.distill_params, ...)`` on a
  dict, which is always false, so it always uses scale 1.
- ``radius="gaussian_radius"`` (CenterPoint's own heatmap radius) is offered
  though the published Gaussian-foreground path accepts only the four custom
  functions (anything else raises ``NotImplementedError`` there).
- Boxes with ``dx <= 0`` or ``dy <= 0`` raise ``ValueError`` (the published
  code skips them); there is no ``max_objs`` cap (500 boxes per task head).
- The variant ``gauss_plus_extended_binary_clamp`` is left out: the published
  code marks it wrong (it equals ``extended_binary``).
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

import torch

from hcam_ops.ops.bev_masks import bev_box_batch, bev_grid_args, check_number

_OP = "gaussian_foreground"
# Boxes by window cells per drawing chunk (the windows are built as [n, D, D]).
_CHUNK_CELLS = 1 << 20


def _radius_gaussian(h: torch.Tensor, w: torch.Tensor, o: float, scale: float) -> torch.Tensor:
    # mmdet3d gaussian_radius (CenterPoint's default): the least of the three roots,
    # each halved by 2 (not by 2a) as published; same operation order.
    r1, r2, r3 = _radius_cp1(h, w, o, scale), _radius_cp2(h, w, o, scale), _radius_cp3(h, w, o, scale)
    return torch.minimum(torch.minimum(r1, r2), r3)


def _radius_cp1(h: torch.Tensor, w: torch.Tensor, o: float, scale: float) -> torch.Tensor:
    b1 = h + w
    c1 = w * h * (1 - o) / (1 + o)
    return (b1 + torch.sqrt(b1**2 - 4 * 1 * c1)) / 2


def _radius_cp2(h: torch.Tensor, w: torch.Tensor, o: float, scale: float) -> torch.Tensor:
    b2 = 2 * (h + w)
    c2 = (1 - o) * w * h
    return (b2 + torch.sqrt(b2**2 - 4 * 4 * c2)) / 2


def _radius_cp3(h: torch.Tensor, w: torch.Tensor, o: float, scale: float) -> torch.Tensor:
    a3 = 4 * o
    b3 = -2 * o * (h + w)
    c3 = (o - 1) * w * h
    return (b3 + torch.sqrt(b3**2 - 4 * a3 * c3)) / 2


def _radius_maxwh(h: torch.Tensor, w: torch.Tensor, o: float, scale: float) -> torch.Tensor:
    return torch.maximum(h, w) * scale


# name -> f(height = l, width = w, min_overlap, radius_scale), elementwise in the tensors' dtype.
RADIUS_FUNCS = {
    "gaussian_radius": _radius_gaussian,
    "centerpoint1": _radius_cp1,
    "centerpoint2": _radius_cp2,
    "centerpoint3": _radius_cp3,
    "maxwh": _radius_maxwh,
}

FOREGROUND_VARIANTS = (
    "gauss",
    "extended_binary",
    "gauss_plus_extended_binary",
    "gauss_in_gt",
    "negative_linear_gauss_in_gt",
    "gauss_plus_binary_clamp",
)


def gaussian_foreground(
    boxes: Sequence[torch.Tensor],
    pc_range,
    cell_size,
    feat_shape: tuple[int, int],
    *,
    min_radius: int = 2,
    gaussian_overlap: float = 0.1,
    radius: str = "gaussian_radius",
    radius_scale: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """DistillBEV's Gaussian foreground ``foreground_mask2`` and its scale map ``fg_scale_mask2``.

    Args:
        boxes: one ``[n_i, 5]`` tensor ``(x, y, dx, dy, yaw)`` per image, or
            ``[n_i, K >= 7]`` in mmdet3d's LiDAR layout ``(x, y, z, dx, dy, dz,
            yaw, ...)``; metres; ``n_i`` may be 0; all on one device. Yaw is
            not used.
        pc_range: ``(x_min, y_min)`` or mmdet3d's 6-number ``point_cloud_range``.
        cell_size: ``voxel_size * out_size_factor``: one number or ``(cell_x, cell_y)``.
        feat_shape: ``(H, W)``: rows along y, columns along x.
        min_radius: the head's ``train_cfg['min_radius']`` (published 2), an int >= 0.
        gaussian_overlap: ``train_cfg['gaussian_overlap']`` (published 0.1), in
            ``[0, 1]``; not used by ``"maxwh"``.
        radius: ``"gaussian_radius"`` (mmdet3d / CenterPoint), ``"centerpoint1"``,
            ``"centerpoint2"``, ``"centerpoint3"`` or ``"maxwh"`` (``max(l, w) *
            radius_scale``).
        radius_scale: the published ``custom_radius_scale``, ``"maxwh"`` only.

    Returns:
        ``(heat, scale)``, each ``[B, H, W]`` on the boxes' device, float32
        (float64 if every box is float64), not differentiable.
    """
    if isinstance(boxes, torch.Tensor):
        raise ValueError(f"{_OP}: boxes must be a list with one [n, 5] or [n, 7+] tensor per image, got a tensor")
    try:
        boxes = list(boxes)
    except TypeError:
        raise ValueError(f"{_OP}: boxes must be a list of tensors, got {type(boxes).__name__}") from None
    if not boxes:
        raise ValueError(f"{_OP}: boxes is empty: one [n, 5] tensor per image is needed")
    x_min, y_min, cell_x, cell_y, H, W = bev_grid_args(pc_range, cell_size, feat_shape, _OP)
    if radius not in RADIUS_FUNCS:
        raise ValueError(f"{_OP}: radius must be one of {tuple(RADIUS_FUNCS)}, got {radius!r}")
    if isinstance(min_radius, bool):
        raise ValueError(f"{_OP}: min_radius must be an int >= 0, got {min_radius!r}")
    try:
        min_radius = operator.index(min_radius)
    except TypeError:
        raise ValueError(f"{_OP}: min_radius must be an int >= 0, got {min_radius!r}") from None
    if min_radius < 0:
        raise ValueError(f"{_OP}: min_radius must be an int >= 0, got {min_radius}")
    overlap = check_number(gaussian_overlap, "gaussian_overlap", _OP)
    if not 0.0 <= overlap <= 1.0:
        raise ValueError(f"{_OP}: gaussian_overlap must be in [0, 1], got {overlap}")
    rscale = check_number(radius_scale, "radius_scale", _OP)
    if rscale <= 0:
        raise ValueError(f"{_OP}: radius_scale must be positive, got {rscale}")
    if radius != "maxwh" and rscale != 1.0:
        raise ValueError(f"{_OP}: radius_scale applies to radius='maxwh' only, got {rscale} with {radius!r}")

    flat, counts = bev_box_batch(boxes, _OP)
    device, dtype, B = flat.device, flat.dtype, len(counts)
    heat = torch.zeros(B, H, W, dtype=dtype, device=device)
    scale = torch.zeros(B, H, W, dtype=dtype, device=device)

    with torch.no_grad():
        flat = flat.cpu()
        if flat.shape[0] == 0:
            return heat, scale
        image = torch.repeat_interleave(torch.arange(B), torch.tensor(counts))

        # Per box, as get_targets_single: sizes and centre in cells, in `dtype`.
        w = flat[:, 2] / cell_x
        l = flat[:, 3] / cell_y
        cx = torch.trunc((flat[:, 0] - x_min) / cell_x)  # .to(torch.int32): toward zero
        cy = torch.trunc((flat[:, 1] - y_min) / cell_y)
        keep = (cx >= 0) & (cx < W) & (cy >= 0) & (cy < H)
        if not bool(keep.any()):
            return heat, scale
        w, l, cx, cy, image = w[keep], l[keep], cx[keep], cy[keep], image[keep]
        rf = RADIUS_FUNCS[radius](l, w, overlap, rscale)
        if not bool(torch.isfinite(rf).all()):
            raise ValueError(f"{_OP}: boxes are too large for a finite radius")
        rad = torch.trunc(rf).clamp(min=min_radius).double()  # max(min_radius, int(radius))
        sigma = (2 * rad + 1) / 6  # draw_heatmap_gaussian: diameter / 6, in float64 like gaussian_2d
        denom = 2 * sigma * sigma
        value = 1.0 / torch.ceil(l * w)  # draw_scale
        r = rad.clamp(max=max(H, W)).long()  # a larger window is clipped to the map all the same
        cx, cy = cx.long(), cy.long()

        ry, rx = min(int(r.max()), H - 1), min(int(r.max()), W - 1)
        oy = torch.arange(-ry, ry + 1, device=device).view(1, -1, 1)
        ox = torch.arange(-rx, rx + 1, device=device).view(1, 1, -1)
        d2 = (oy * oy + ox * ox).to(torch.float64)
        eps = torch.finfo(torch.float64).eps  # gaussian_2d: h < eps * h.max(), h.max() == 1
        per_chunk = max(1, _CHUNK_CELLS // ((2 * ry + 1) * (2 * rx + 1)))
        heat_flat, scale_flat = heat.view(-1), scale.view(-1)
        ints = torch.stack([image, cy, cx, r], dim=1).to(device)
        floats = denom.to(device)
        value = value.to(device)
        for s in range(0, ints.shape[0], per_chunk):
            img_k, cy_k, cx_k, r_k = (t.view(-1, 1, 1) for t in ints[s : s + per_chunk].unbind(1))
            rows, cols_ = cy_k + oy, cx_k + ox
            inside = (oy.abs() <= r_k) & (ox.abs() <= r_k) & (rows >= 0) & (rows < H) & (cols_ >= 0) & (cols_ < W)
            index = torch.where(inside, (img_k * H + rows) * W + cols_, 0).reshape(-1)
            g = torch.exp(-d2 / floats[s : s + per_chunk].view(-1, 1, 1))
            g = torch.where(g < eps, 0.0, g).to(dtype)
            g = torch.where(inside, g, 0.0)
            v = torch.where(inside, value[s : s + per_chunk].view(-1, 1, 1), 0.0)
            heat_flat.scatter_reduce_(0, index, g.reshape(-1), "amax")
            scale_flat.scatter_reduce_(0, index, v.reshape(-1), "amax")
    return heat, scale


def foreground_variant(
    name: str,
    gt_foreground: torch.Tensor | None,
    heat: torch.Tensor,
    *,
    gauss_fg_weight: float = -1e10,
    fg_weight: float | None = None,
    bg_weight: float | None = None,
) -> torch.Tensor:
    """The published ``foreground_mask`` options (``bevdet_distill.py`` l.1054-1071).

    ``gt_foreground`` is the box foreground (``bev_masks_from_boxes``'s ``fg``,
    needed by the last three), ``heat`` the ``gaussian_foreground`` map, same shape:

    - ``"gauss"``: ``heat``
    - ``"extended_binary"``: ``heat != 0``
    - ``"gauss_plus_extended_binary"``: ``heat + (heat != 0)``
    - ``"gauss_in_gt"``: ``gt_foreground * heat``
    - ``"negative_linear_gauss_in_gt"``: ``gt_foreground * (heat + bg_weight /
      fg_weight * (1 - heat))`` (the level's ``bg_feat_loss_weights`` and
      ``fg_feat_loss_weights``)
    - ``"gauss_plus_binary_clamp"``: ``clamp(gauss_fg_weight * heat +
      (gt_foreground != 0), 0, 1)`` (published default ``gauss_fg_weight = -1e10``)

    ``gauss_plus_extended_binary_clamp`` is left out (the published code marks it
    wrong: it equals ``extended_binary``).
    """
    if name not in FOREGROUND_VARIANTS:
        extra = " (left out: the published code marks it wrong; it equals 'extended_binary')"
        raise ValueError(
            f"foreground_variant: name must be one of {FOREGROUND_VARIANTS}, got {name!r}"
            + (extra if name == "gauss_plus_extended_binary_clamp" else "")
        )
    if not isinstance(heat, torch.Tensor):
        raise ValueError(f"foreground_variant: heat must be a tensor, got {type(heat).__name__}")
    if name == "gauss":
        return heat
    if name == "extended_binary":
        return (heat != 0).to(heat.dtype)
    if name == "gauss_plus_extended_binary":
        return heat + (heat != 0).to(heat.dtype)
    if not isinstance(gt_foreground, torch.Tensor):
        raise ValueError(f"foreground_variant: gt_foreground must be a tensor for {name!r}, got {gt_foreground!r}")
    if gt_foreground.shape != heat.shape:
        raise ValueError(
            f"foreground_variant: gt_foreground has shape {tuple(gt_foreground.shape)}, heat {tuple(heat.shape)}"
        )
    if name == "gauss_in_gt":
        return gt_foreground * heat
    if name == "gauss_plus_binary_clamp":
        weight = float(gauss_fg_weight)
        return torch.clamp(weight * heat + (gt_foreground != 0).to(heat.dtype), min=0.0, max=1.0)
    # negative_linear_gauss_in_gt
    if fg_weight is None or bg_weight is None:
        raise ValueError("foreground_variant: fg_weight and bg_weight are needed for 'negative_linear_gauss_in_gt'")
    if float(fg_weight) == 0:
        raise ValueError("foreground_variant: fg_weight must be non-zero for 'negative_linear_gauss_in_gt'")
    return gt_foreground * (heat + float(bg_weight) / float(fg_weight) * (1 - heat))
