"""hcam_ops.bev_masks_from_boxes: DistillBEV's foreground / background masks on
the BEV grid from rotated 3D boxes (docs/ops/fgd.md#bev_masks_from_boxes),
rasterised by a kernel on the boxes' device."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch

from . import _checks
from ._dtypes import acc_dtype

_OP = "bev_masks_from_boxes"
SCALE_MASKS = ("combine", "separate", "bg_only", "none")
BACKGROUNDS = ("logical_not", "1minus")


@torch.library.register_fake("hcam_ops::bev_masks")
def _bev_masks_fake(
    boxes,
    offsets,
    x_min,
    y_min,
    cell_x,
    cell_y,
    height,
    width,
    bg_extend_length,
    bg_extend_weight,
    scale_mask,
    background,
):
    B = offsets.shape[0] - 1
    return boxes.new_empty((B, height, width)), boxes.new_empty((B, height, width))


def check_number(v, what: str, op: str = _OP) -> float:
    if isinstance(v, (str, bytes)):  # float("1") parses; a number argument is not text
        raise TypeError(f"{op}: {what} must be a number, got {v!r}")
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise TypeError(f"{op}: {what} must be a number, got {v!r}") from None
    if not math.isfinite(x):
        raise ValueError(f"{op}: {what} must be finite, got {x}")
    return x


def _numbers(v, what: str, counts: tuple[int, ...], op: str = _OP) -> list[float]:
    if isinstance(v, torch.Tensor):
        v = v.reshape(-1).tolist()
    try:
        vals = list(v)
    except TypeError:
        raise TypeError(
            f"{op}: {what} must be a sequence of {' or '.join(map(str, counts))} numbers, got {v!r}"
        ) from None
    if len(vals) not in counts:
        raise ValueError(f"{op}: {what} must have {' or '.join(map(str, counts))} numbers, got {len(vals)}")
    return [check_number(x, what, op) for x in vals]


def bev_grid_args(pc_range, cell_size, feat_shape, op: str = _OP) -> tuple[float, float, float, float, int, int]:
    """Checks the grid arguments; returns (x_min, y_min, cell_x, cell_y, H, W)."""
    pc = _numbers(pc_range, "pc_range", (2, 6), op)
    if isinstance(cell_size, torch.Tensor) and cell_size.numel() == 1:
        cell_size = cell_size.item()
    try:
        len(cell_size)
    except TypeError:  # one number (a Python or NumPy scalar)
        cx = cy = check_number(cell_size, "cell_size", op)
    else:
        cx, cy = _numbers(cell_size, "cell_size", (2,), op)
    if cx <= 0 or cy <= 0:
        raise ValueError(f"{op}: cell_size must be positive, got ({cx}, {cy})")
    try:
        H, W = feat_shape
    except (TypeError, ValueError):
        raise TypeError(f"{op}: feat_shape must be a pair (H, W), got {feat_shape!r}") from None
    if any(isinstance(x, bool) or not isinstance(x, (numbers.Integral, torch.SymInt)) for x in (H, W)):
        raise TypeError(f"{op}: feat_shape must be a pair of ints (H, W), got {feat_shape!r}")
    H, W = _checks.check_int(H, op, "feat_shape"), _checks.check_int(W, op, "feat_shape")
    if H <= 0 or W <= 0:
        raise ValueError(f"{op}: feat_shape must be positive, got ({H}, {W})")
    return pc[0], pc[1], cx, cy, H, W


def bev_box_columns(b: torch.Tensor, i: int, op: str = _OP) -> torch.Tensor:
    """One image's boxes as [n, 5] (x, y, dx, dy, yaw): 5 columns are taken as
    they are, 7 or more as mmdet3d's (x, y, z, dx, dy, dz, yaw, ...)."""
    if not isinstance(b, torch.Tensor) or b.dim() != 2 or b.shape[1] == 6 or b.shape[1] < 5:
        raise ValueError(
            f"{op}: boxes[{i}] must be [n, 5] (x, y, dx, dy, yaw) or [n, 7+] (x, y, z, dx, dy, dz, yaw, ...), "
            f"got {tuple(b.shape) if isinstance(b, torch.Tensor) else type(b).__name__}"
        )
    return b if b.shape[1] == 5 else b[:, [0, 1, 3, 4, 6]]


def bev_box_batch(boxes, op: str = _OP, check: bool = True) -> tuple[torch.Tensor, list[int]]:
    """A list of per-image boxes (5 or 7+ columns) as one ``[N, 5]`` tensor in
    float64 when all are float64 (else float32) and the per-image counts;
    ``check``: NaN / Inf and non-positive sizes raise (one sync on CUDA)."""
    boxes = list(boxes)
    if not boxes:
        raise ValueError(f"{op}: boxes is empty: one [n, 5] tensor per image is needed")
    cols = [bev_box_columns(b, i, op) for i, b in enumerate(boxes)]
    device = cols[0].device
    for i, b in enumerate(cols):
        if b.device != device:
            raise ValueError(f"{op}: boxes[{i}] is on {b.device}, boxes[0] on {device}")
    dtype = acc_dtype(*(b.dtype for b in cols))
    flat = torch.cat([b.detach().to(dtype) for b in cols], dim=0)
    if check and flat.numel() and not torch.compiler.is_compiling() and device.type != "meta":
        finite, positive = torch.stack([torch.isfinite(flat).all(), (flat[:, 2:4] > 0).all()]).tolist()
        if not finite:
            raise ValueError(f"{op}: boxes hold NaN or Inf")
        if not positive:
            raise ValueError(f"{op}: boxes must have positive sizes dx, dy")
    return flat, [b.shape[0] for b in cols]


def bev_masks_from_boxes(
    boxes: Sequence[torch.Tensor],
    pc_range,
    cell_size,
    feat_shape: tuple[int, int],
    *,
    scale_mask: str = "combine",
    background: str = "logical_not",
    bg_extend_length: float = 0.0,
    bg_extend_weight: float = 0.0,
    check_boxes: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Foreground and background masks of DistillBEV on the BEV grid.

    The published ``foreground_scale_mask`` and ``scale_mask`` steps of
    qcraftai/distill-bev (``bevdet_distill.py``), ``foreground_mask='gt'``.

    Args:
        boxes: one ``[n_i, 5]`` tensor ``(x, y, dx, dy, yaw)`` per image, or
            ``[n_i, K >= 7]`` in mmdet3d's LiDAR layout ``(x, y, z, dx, dy, dz,
            yaw, ...)`` (``LiDARInstance3DBoxes.tensor``; z, dz and the rest are
            ignored). Metres and radians; ``n_i`` may be 0; all on one device.
        pc_range: ``(x_min, y_min)``, or mmdet3d's 6-number
            ``point_cloud_range`` (its first two are used).
        cell_size: the size of a BEV cell in metres, ``voxel_size *
            out_size_factor``: one number, or ``(cell_x, cell_y)``. Tensors
            given for ``pc_range`` or ``cell_size`` are read as Python floats
            (a float32 ``0.8`` stays ``0.800000011920929``).
        feat_shape: the BEV map's ``(H, W)``: rows along y, columns along x.
        scale_mask: ``"combine"`` (the published configs' ``combine_gt``),
            ``"separate"`` (``separate_gt``), ``"bg_only"`` or ``"none"``.
        background: ``"logical_not"`` (published default) or ``"1minus"``.
        bg_extend_length: the published ``context_length``: each box enlarged
            by ``cell_x * bg_extend_length`` in dx and in dy (on when both this
            and ``bg_extend_weight`` are positive).
        bg_extend_weight: the published ``context_weight``: the foreground
            weight of cells in an enlarged box only.
        check_boxes: raise ``ValueError`` for non-finite boxes or sizes
            ``dx, dy <= 0`` (one device sync on CUDA; skipped under
            ``torch.compile``).

    Returns:
        ``(fg, bg)``, each ``[B, H, W]`` in the boxes' dtype (float64 stays,
        anything else is float32), not differentiable. Cell ``(h, w)`` is the
        point ``(x_min + w * cell_x, y_min + h * cell_y)``, inside a box when
        strictly inside its rotated rectangle. See the docs for the weights.
        The same cells, edges included, on every device and CPU variant and
        in ``hcam_ops.reference``: cos / sin of the yaws are taken in double
        on the host and every product is rounded on its own (no fused
        multiply-add), so on CUDA the op copies the yaws and the offsets to
        the host (a sync).
    """
    if isinstance(boxes, torch.Tensor):
        raise TypeError(f"{_OP}: boxes must be a list with one [n, 5] or [n, 7+] tensor per image, got a tensor")
    x_min, y_min, cell_x, cell_y, H, W = bev_grid_args(pc_range, cell_size, feat_shape)
    if scale_mask not in SCALE_MASKS:
        raise ValueError(f"{_OP}: scale_mask must be one of {SCALE_MASKS}, got {scale_mask!r}")
    if background not in BACKGROUNDS:
        raise ValueError(f"{_OP}: background must be one of {BACKGROUNDS}, got {background!r}")
    length = check_number(bg_extend_length, "bg_extend_length")
    weight = check_number(bg_extend_weight, "bg_extend_weight")
    if length < 0 or weight < 0:
        raise ValueError(f"{_OP}: bg_extend_length and bg_extend_weight must be >= 0, got {length}, {weight}")
    flat, counts = bev_box_batch(boxes, check=check_boxes)
    device = flat.device
    offsets = torch.tensor([0, *counts], dtype=torch.int64).cumsum(0).to(device)
    _checks.check_output_size((len(counts), H, W), flat.dtype, _OP, "feat_shape", (H, W))
    return _checks.call_allocating(
        _OP,
        "feat_shape",
        (H, W),
        torch.ops.hcam_ops.bev_masks,
        flat.contiguous(),
        offsets,
        x_min,
        y_min,
        cell_x,
        cell_y,
        H,
        W,
        length,
        weight,
        scale_mask,
        background,
    )
