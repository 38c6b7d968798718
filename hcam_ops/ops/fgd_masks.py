"""hcam_ops.fgd_masks_from_boxes: FGD's foreground / background masks from
boxes (docs/ops/fgd.md#fgd_masks_from_boxes), rasterised by a kernel on the boxes' device."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch

from . import _checks
from ._dtypes import acc_dtype

_OP = "fgd_masks_from_boxes"


@torch.library.register_fake("hcam_ops::fgd_masks")
def _masks_fake(boxes, offsets, img_shapes, height, width):
    B = offsets.shape[0] - 1
    return boxes.new_empty((B, height, width)), boxes.new_empty((B, height, width))


def _pair(v, what: str) -> tuple[int, int]:
    try:
        a, b = v
    except (TypeError, ValueError):
        raise TypeError(f"{_OP}: {what} must be a pair (height, width), got {v!r}") from None
    for x in (a, b):
        # Sizes in pixels or cells are ints (mmdet's img_shape is): 10.5 is refused, not truncated.
        if isinstance(x, bool) or not isinstance(x, (numbers.Integral, torch.SymInt)):
            raise TypeError(f"{_OP}: {what} must be a pair of ints (height, width), got {v!r}")
    a, b = _checks.check_int(a, _OP, what), _checks.check_int(b, _OP, what)
    if a <= 0 or b <= 0:
        raise ValueError(f"{_OP}: {what} must be positive, got ({a}, {b})")
    return a, b


def _img_shapes(img_shape, B: int, dtype, device) -> torch.Tensor:
    if isinstance(img_shape, torch.Tensor):
        shapes = img_shape.to(device=device, dtype=dtype).reshape(-1, 2)
    elif len(img_shape) == 2 and not isinstance(img_shape[0], (tuple, list, torch.Tensor)):
        shapes = torch.tensor([_pair(img_shape, "img_shape")] * B, dtype=dtype, device=device)
    else:
        shapes = torch.tensor([_pair(s, "img_shape") for s in img_shape], dtype=dtype, device=device)
    if shapes.shape[0] == 1 and B != 1:
        shapes = shapes.expand(B, 2)
    if shapes.shape != (B, 2):
        raise ValueError(f"{_OP}: img_shape must be one (h, w) pair or one per image ({B}), got {tuple(shapes.shape)}")
    return shapes.contiguous()


def _clip_vanishing(flat: torch.Tensor, shapes: torch.Tensor, counts: list[int], H: int, W: int) -> torch.Tensor:
    """Clips to the image the boxes whose ``1 / area`` is below the dtype's
    smallest normal (an area past its range: ``x2 = y2 = 1e30`` in float32),
    which the kernel would mark with 0, as if no box were there. The clip is
    mmdet's before FGD (``x1 = max(x1, 0)``, ``x2 = min(x2, img_w)``), with
    ``x2 >= -img_w`` so that a box wholly outside still covers nothing. Other
    boxes, and boxes with a non-finite cell edge, are left as they are."""
    per_box = torch.repeat_interleave(shapes, torch.tensor(counts, device=flat.device), dim=0, output_size=len(flat))
    img_h, img_w = per_box.unbind(1)
    x0, y0 = torch.floor(flat[:, 0] / img_w * W), torch.floor(flat[:, 1] / img_h * H)
    xe, ye = torch.ceil(flat[:, 2] / img_w * W), torch.ceil(flat[:, 3] / img_h * H)
    inv_area = 1 / ((ye + 1 - y0) * (xe + 1 - x0))
    finite = torch.isfinite(torch.stack([x0, y0, xe, ye], dim=1)).all(dim=1)
    vanishing = finite & (inv_area.abs() < torch.finfo(flat.dtype).tiny)
    hi = torch.stack([img_w, img_h, img_w, img_h], dim=1)
    lo = torch.stack([torch.zeros_like(img_w), torch.zeros_like(img_h), -img_w, -img_h], dim=1)
    return torch.where(vanishing[:, None], torch.minimum(torch.maximum(flat, lo), hi), flat)


def _without_zero_rows(b, i: int):
    if not isinstance(b, torch.Tensor) or b.dim() != 2 or b.shape[1] != 4:
        raise ValueError(f"{_OP}: boxes[{i}] must be [n, 4], got {getattr(b, 'shape', type(b).__name__)}")
    return b[(b != 0).any(dim=1)]


def fgd_masks_from_boxes(
    boxes: Sequence[torch.Tensor],
    img_shape,
    feat_shape: tuple[int, int],
    *,
    check_boxes: bool = True,
    padded: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Foreground and background masks of FGD from ground-truth boxes.

    Args:
        boxes: one ``[n_i, 4]`` tensor ``(x1, y1, x2, y2)`` in image pixels per
            image (``n_i`` may be 0), all on one device.
        img_shape: the image size ``(img_h, img_w)`` in ints, one pair for
            all images or one per image (a sequence of pairs or a ``[B, 2]``
            tensor); a float such as 10.5 is a ``TypeError``.
        feat_shape: the feature map's ``(H, W)``, positive ints.
        check_boxes: raise ``ValueError`` for non-finite boxes and for
            ``x2 < x1`` or ``y2 < y1`` (one device sync on CUDA).
        padded: the boxes come padded, as mmyolo's and mmrazor's ``gt_info``
            (``[B, n_max, 5]`` rows of ``(label, x1, y1, x2, y2)``; pass its
            ``[..., 1:]``): ``boxes`` may then be one ``[B, n_max, 4]`` tensor,
            and every all-zero row is padding, dropped (one device sync on
            CUDA). Unpadded, a zero row is a real box that covers cell (0, 0).

    Returns:
        ``(fg, bg)``, each ``[B, H, W]`` in the boxes' dtype (float64 stays,
        anything else is float32). ``fg`` is the max over covering boxes of
        ``1 / area`` (area in cells, before clipping to the map); cells
        outside the map are dropped. A box whose ``1 / area`` the dtype
        cannot hold (``x2 = y2 = 1e30`` in float32) is first clipped to the
        image, as mmdet clips FGD's boxes, so it is never dropped. ``bg`` is ``1 / count`` on the cells no
        box covers, per image, and all zeros if boxes cover every cell.
    """
    if isinstance(boxes, torch.Tensor):
        if not padded:
            raise TypeError(
                f"{_OP}: boxes must be a list with one [n, 4] tensor per image, got a tensor "
                "(a padded [B, n_max, 4] tensor needs padded=True)"
            )
        if boxes.dim() != 3 or boxes.shape[-1] != 4:
            raise ValueError(f"{_OP}: padded boxes must be [B, n_max, 4], got {tuple(boxes.shape)}")
    boxes = list(boxes)
    if padded:
        boxes = [_without_zero_rows(b, i) for i, b in enumerate(boxes)]
    H, W = _pair(feat_shape, "feat_shape")
    if not boxes:
        raise ValueError(f"{_OP}: boxes is empty: one [n, 4] tensor per image is needed")
    device = boxes[0].device
    dtype = acc_dtype(*(b.dtype for b in boxes))
    for i, b in enumerate(boxes):
        if not isinstance(b, torch.Tensor) or b.dim() != 2 or b.shape[1] != 4:
            raise ValueError(f"{_OP}: boxes[{i}] must be [n, 4], got {getattr(b, 'shape', type(b).__name__)}")
        if b.device != device:
            raise ValueError(f"{_OP}: boxes[{i}] is on {b.device}, boxes[0] on {device}")
    flat = torch.cat([b.to(dtype) for b in boxes], dim=0)
    if check_boxes and flat.numel() and not torch.compiler.is_compiling() and device.type != "meta":
        bad_order = (flat[:, 2] < flat[:, 0]) | (flat[:, 3] < flat[:, 1])
        finite = torch.isfinite(flat).all()
        bad, finite = torch.stack([bad_order.any(), finite]).tolist()
        if not finite:
            raise ValueError(f"{_OP}: boxes hold NaN or Inf")
        if bad:
            raise ValueError(f"{_OP}: boxes must have x2 >= x1 and y2 >= y1")
    counts = [b.shape[0] for b in boxes]
    offsets = torch.tensor([0, *counts], dtype=torch.int64).cumsum(0).to(device)
    shapes = _img_shapes(img_shape, len(boxes), dtype, device)
    if flat.numel():
        flat = _clip_vanishing(flat, shapes, counts, H, W)
    _checks.check_output_size((len(boxes), H, W), dtype, _OP, "feat_shape", (H, W))
    return _checks.call_allocating(
        _OP, "feat_shape", (H, W), torch.ops.hcam_ops.fgd_masks, flat.contiguous(), offsets, shapes, H, W
    )
