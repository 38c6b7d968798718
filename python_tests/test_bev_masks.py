"""hcam_ops.bev_masks_from_boxes against the one-box-at-a-time reference, hand
examples of the published rules, and a tiny transcription of the published
mask code (qcraftai/distill-bev: box_np_ops.points_in_rbbox and
BEVDetDistill.foreground_scale_mask / the scale_mask step)."""

import math

import numpy as np
import pytest
import torch
from conftest import DEVICES, cuda_only, real_cuda_only, run_on

import hcam_ops
from hcam_ops import reference as R

# A nuScenes-like grid cut down to odd shapes: 0.8 m cells from (-51.2, -51.2).
PC = (-51.2, -51.2)
CELL = 0.8
# Random boxes are kept only if no cell point lies within this distance (m)
# of an edge of the box (or of its enlarged box): there the rounding of the
# rotation, not the rule, decides, and the published transcription below
# rounds otherwise (the kernels and the reference round alike: the "ties"
# tests put cell points on edges).
MARGIN = 1e-3


def _points(pc, cell, shape):
    H, W = shape
    cx, cy = (cell, cell) if isinstance(cell, (int, float)) else cell
    xs = pc[0] + torch.arange(W, dtype=torch.float64) * cx
    ys = pc[1] + torch.arange(H, dtype=torch.float64) * cy
    return xs.expand(H, W).reshape(-1), ys[:, None].expand(H, W).reshape(-1)


def _near_edge(box, px, py, extends):
    x, y, dx, dy, yaw = box.tolist()
    ex, ey = px - x, py - y
    u = (math.cos(yaw) * ex - math.sin(yaw) * ey).abs()
    v = (math.sin(yaw) * ex + math.cos(yaw) * ey).abs()
    for e in extends:
        hx, hy = (dx + e) / 2, (dy + e) / 2
        on_x = ((u - hx).abs() < MARGIN) & (v < hy + MARGIN)
        on_y = ((v - hy).abs() < MARGIN) & (u < hx + MARGIN)
        if (on_x | on_y).any():
            return True
    return False


def _random_boxes(n, gen, shape, dtype=torch.float32, pc=PC, cell=CELL, extends=(0.0,)):
    """n boxes (x, y, dx, dy, yaw) around the grid (some partly or wholly off
    it), sizes 0.3 .. 8 m, any yaw, none with a cell point near an edge."""
    H, W = shape
    px, py = _points(pc, cell, shape)
    lo = torch.tensor([pc[0] - 6, pc[1] - 6])
    span = torch.tensor([W * CELL + 12, H * CELL + 12])
    out = []
    while len(out) < n:
        c = lo + torch.rand(2, generator=gen, dtype=torch.float64) * span
        size = 0.3 + torch.rand(2, generator=gen, dtype=torch.float64) * 7.7
        yaw = (torch.rand(1, generator=gen, dtype=torch.float64) * 2 - 1) * math.pi
        box = torch.cat([c, size, yaw]).to(dtype).double()  # the values the op sees
        if not _near_edge(box, px, py, extends):
            out.append(box)
    return torch.stack(out).to(dtype) if out else torch.zeros(0, 5, dtype=dtype)


def _check(got, want, dtype, device, shape):
    for g, w in zip(got, want):
        assert g.dtype == dtype and g.device.type == device and g.shape == shape
        torch.testing.assert_close(g.cpu(), w, rtol=0, atol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("feat_shape", [(1, 1), (7, 9), (16, 16), (25, 38), (41, 27)], ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_parity(dtype, feat_shape, device, gen):
    boxes = [
        _random_boxes(5, gen, feat_shape, dtype),
        torch.zeros(0, 5, dtype=dtype),
        _random_boxes(1, gen, feat_shape, dtype),
        _random_boxes(300, gen, feat_shape, dtype),  # many overlaps; more than a CUDA block
    ]
    got = hcam_ops.bev_masks_from_boxes([b.to(device) for b in boxes], PC, CELL, feat_shape)
    want = R.bev_masks_from_boxes(boxes, PC, CELL, feat_shape)
    _check(got, want, dtype, device, (4, *feat_shape))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("scale_mask", ["combine", "separate", "bg_only", "none"])
@pytest.mark.parametrize("background", ["logical_not", "1minus"])
@pytest.mark.parametrize("extend", [(0.0, 0.0), (2.0, 0.5), (3.0, 0.0), (1.5, 1.7)], ids=str)
def test_options(extend, background, scale_mask, device, gen):
    shape = (23, 31)
    length, weight = extend
    ext = (0.0, CELL * length)
    boxes = [_random_boxes(n, gen, shape, torch.float64, extends=ext) for n in (12, 0, 40)]
    kw = dict(scale_mask=scale_mask, background=background, bg_extend_length=length, bg_extend_weight=weight)
    got = hcam_ops.bev_masks_from_boxes([b.to(device) for b in boxes], PC, CELL, shape, **kw)
    want = R.bev_masks_from_boxes(boxes, PC, CELL, shape, **kw)
    _check(got, want, torch.float64, device, (3, *shape))


@pytest.mark.parametrize("device", DEVICES)
def test_rectangular_cells_and_mmdet_layout(device, gen):
    shape, cell, pc = (19, 13), (0.6, 1.1), (-3.0, 7.5)
    b5 = _random_boxes(30, gen, shape, torch.float64, pc=pc, cell=cell)
    z = torch.rand(30, 1, generator=gen, dtype=torch.float64)
    b9 = torch.cat([b5[:, :2], z, b5[:, 2:4], z + 1, b5[:, 4:], torch.zeros(30, 2, dtype=torch.float64)], 1)
    point_cloud_range = (*pc, -5.0, 51.2, 51.2, 3.0)
    got5 = hcam_ops.bev_masks_from_boxes([b5.to(device)], pc, cell, shape)
    got9 = hcam_ops.bev_masks_from_boxes(
        [b9.to(device)], point_cloud_range, torch.tensor(cell, dtype=torch.float64), shape
    )
    want = R.bev_masks_from_boxes([b5], pc, cell, shape)
    _check(got5, want, torch.float64, device, (1, *shape))
    _check(got9, want, torch.float64, device, (1, *shape))


def test_grid_argument_forms(gen):
    shape = (9, 14)
    b = _random_boxes(20, gen, shape, torch.float64)
    want = R.bev_masks_from_boxes([b], PC, CELL, shape)
    for pc, cell in [
        (torch.tensor(PC, dtype=torch.float64), np.float64(CELL)),
        ([*PC, -5.0, 51.2, 51.2, 3.0], torch.tensor(CELL, dtype=torch.float64)),
        (PC, (CELL, CELL)),
    ]:
        _check(hcam_ops.bev_masks_from_boxes([b], pc, cell, shape), want, torch.float64, "cpu", (1, *shape))


def test_non_contiguous_boxes(gen):
    shape = (17, 21)
    b = _random_boxes(25, gen, shape)
    wide = torch.zeros(5, 25 * 2)
    wide[:, ::2] = b.t()
    strided = wide[:, ::2].t()  # [25, 5] with strides (2, 50)
    assert not strided.is_contiguous()
    got = hcam_ops.bev_masks_from_boxes([strided], PC, CELL, shape)
    want = R.bev_masks_from_boxes([b], PC, CELL, shape)
    _check(got, want, torch.float32, "cpu", (1, *shape))


# --- the published rules, by hand ------------------------------------------------
# A 9 x 9 grid of 0.5 m cells from (-2, -2): cell (h, w) is the point (-2 + w/2, -2 + h/2).
G_PC, G_CELL, G_SHAPE = (-2.0, -2.0), 0.5, (9, 9)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_cell_on_an_edge_is_outside(dtype, device):
    # dx = 2, dy = 1 about (0, 0): the points x = +-1 and y = +-0.5 lie on the edges
    fg, bg = hcam_ops.bev_masks_from_boxes(
        [torch.tensor([[0.0, 0.0, 2.0, 1.0, 0.0]], dtype=dtype, device=device)],
        G_PC,
        G_CELL,
        G_SHAPE,
        scale_mask="none",
    )
    want = torch.zeros(9, 9, dtype=dtype)
    want[4, 3:6] = 1  # y = 0; x = -0.5, 0, 0.5
    torch.testing.assert_close(fg[0].cpu(), want, rtol=0, atol=0)
    torch.testing.assert_close(bg[0].cpu(), 1 - want, rtol=0, atol=0)


def test_scale_values_combine_and_separate():
    box = torch.tensor([[0.0, 0.0, 2.0, 1.0, 0.0]], dtype=torch.float64)
    inner = math.sqrt(0.25 / 2.0)  # sqrt(cell area / box area)
    for mode, fg_val in [("combine", max(inner, 1 / 78)), ("separate", inner), ("bg_only", 1 / 78)]:
        fg, bg = hcam_ops.bev_masks_from_boxes([box], G_PC, G_CELL, G_SHAPE, scale_mask=mode)
        assert torch.allclose(fg[0, 4, 3:6], torch.full((3,), fg_val, dtype=torch.float64), rtol=1e-15, atol=0)
        assert fg.count_nonzero() == 3
        assert (bg[0, 4, 3:6] == 0).all() and torch.allclose(bg.sum(), torch.tensor(1.0, dtype=torch.float64))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_yaw_half_pi_swaps_the_sizes(dtype, device):
    # centre and sizes put no cell point near an edge
    a = torch.tensor([[0.13, -0.21, 3.3, 1.7, math.pi / 2]], dtype=dtype, device=device)
    b = torch.tensor([[0.13, -0.21, 1.7, 3.3, 0.0]], dtype=dtype, device=device)
    c = torch.tensor([[0.13, -0.21, 1.7, 3.3, math.pi]], dtype=dtype, device=device)
    fa = hcam_ops.bev_masks_from_boxes([a], G_PC, G_CELL, G_SHAPE, scale_mask="none")[0].cpu()
    fb = hcam_ops.bev_masks_from_boxes([b], G_PC, G_CELL, G_SHAPE, scale_mask="none")[0].cpu()
    fc = hcam_ops.bev_masks_from_boxes([c], G_PC, G_CELL, G_SHAPE, scale_mask="none")[0].cpu()
    assert fb.sum() > 0
    torch.testing.assert_close(fa, fb, rtol=0, atol=0)
    torch.testing.assert_close(fc, fb, rtol=0, atol=0)
    # rows are y, columns x: the box is 1.7 m along x and 3.3 m along y
    assert fb[0].any(dim=1).sum() > fb[0].any(dim=0).sum()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_yaw_direction(dtype, device):
    # A thin box along x (dx = 3, dy = 0.2) at yaw = +pi/4: the published
    # corners are the box rotated by -yaw (mmdet3d v0.x), so it lies along y = -x.
    box = torch.tensor([[0.0, 0.0, 3.0, 0.2, math.pi / 4]], dtype=dtype, device=device)
    fm = hcam_ops.bev_masks_from_boxes([box], G_PC, G_CELL, G_SHAPE, scale_mask="none")[0][0].cpu()
    cells = {(h - 4, w - 4) for h, w in fm.nonzero().tolist()}  # (y, x) in half metres
    assert cells == {(-2, 2), (-1, 1), (0, 0), (1, -1), (2, -2)}


# --- box edges on the cell points of the published nuScenes grid ----------------------
# 0.8 m cells from (-51.2, -51.2), 128 x 128: an origin and a cell size off the
# binary grid, so a cell point on an edge is a tie that only the order and the
# rounding of the operations decide. The kernels (every CPU variant, CUDA) and
# the reference must decide it alike: the tests named "ties" run at each CPU
# level too (test_cpu_isa.py).
NUS_PC, NUS_CELL, NUS_SHAPE = (-51.2, -51.2), 0.8, (128, 128)


def _grid_points(n, dtype):
    """The cell points along one axis, as the kernels compute them: x_min + i * cell,
    the product rounded to the dtype, then the sum."""
    return torch.arange(n, dtype=dtype) * torch.tensor(NUS_CELL, dtype=dtype) + torch.tensor(NUS_PC[0], dtype=dtype)


def _exact_ties(dtype, count):
    """(centre index i, half width k, half size h) with points[i + k] - points[i] ==
    points[i] - points[i - k] == h in the dtype: a box of size 2h about points[i] has
    the cell points i - k and i + k exactly on its edges (at yaw 0: u = ex exactly)."""
    pts = _grid_points(NUS_SHAPE[1], dtype)
    per_k = []
    for k in (1, 2, 3, 5):
        found = []
        for i in range(k + 3, NUS_SHAPE[1] - k - 3, 7):
            h = pts[i + k] - pts[i]
            if pts[i] - pts[i - k] == h:
                found.append((i, k, h))
        per_k.append(found)
    out = [t for ts in zip(*per_k) for t in ts]  # every half width in turn
    assert len(out) >= count, len(out)
    return out[:count]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_edge_ties_exactly_on_cell_points(dtype, device):
    # The inside test runs in float32 whatever the boxes' dtype (as published):
    # the ties are float32 ones, given as boxes of either dtype (exactly).
    pts = _grid_points(NUS_SHAPE[1], torch.float32)
    ties = _exact_ties(torch.float32, 8)
    rows = []
    want = torch.zeros(len(ties), *NUS_SHAPE, dtype=dtype)
    for n, ((i, k, hx), (j, m, hy)) in enumerate(zip(ties, ties[::-1])):
        rows.append(torch.stack([pts[i], pts[j], 2 * hx, 2 * hy, torch.zeros(())]))
        want[n, j - m + 1 : j + m, i - k + 1 : i + k] = 1  # the points on the edges (i +- k, j +- m) are outside
    boxes = torch.stack(rows).to(device, dtype)
    fg, bg = hcam_ops.bev_masks_from_boxes(list(boxes[:, None]), NUS_PC, NUS_CELL, NUS_SHAPE, scale_mask="none")
    torch.testing.assert_close(fg.cpu(), want, rtol=0, atol=0)
    torch.testing.assert_close(bg.cpu(), 1 - want, rtol=0, atol=0)
    want_r = R.bev_masks_from_boxes(list(boxes.cpu()[:, None]), NUS_PC, NUS_CELL, NUS_SHAPE, scale_mask="none")
    _check((fg, bg), want_r, dtype, device, (len(ties), *NUS_SHAPE))


def _edge_boxes(dtype, gen, n):
    """n boxes whose edges pass through cell points by their nominal (decimal) values:
    centre on a cell point, yaw = atan2(b, a) for a small integer direction (a, b), half
    sizes whole multiples of 0.8 * |(a, b)|, so the corners and more points of each edge
    are cell points; each value rounded to the dtype once."""
    dirs = [(1, 0), (0, 1), (-1, 0), (0, -1), (1, 1), (-1, 1), (1, -1), (-1, -1), (2, 1), (1, 2), (-2, 1), (4, 3)]
    H, W = NUS_SHAPE
    out = []
    for _ in range(n):
        i, j = torch.randint(0, W, (1,), generator=gen).item(), torch.randint(0, H, (1,), generator=gen).item()
        k, m = torch.randint(1, 9, (2,), generator=gen).tolist()
        a, b = dirs[torch.randint(0, len(dirs), (1,), generator=gen).item()]
        length = math.hypot(a, b)
        out.append(
            [
                NUS_PC[0] + i * NUS_CELL,
                NUS_PC[1] + j * NUS_CELL,
                2 * k * NUS_CELL * length,
                2 * m * NUS_CELL * length,
                math.atan2(b, a),
            ]
        )
    return torch.tensor(out, dtype=dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("extend", [(0.0, 0.0), (2.0, 0.5)], ids=str)
def test_edge_ties_nominal_on_cell_points(extend, dtype, device, gen):
    # Many cell points within an ulp or so of an edge: fused multiply-adds (the
    # AVX2 / AVX-512 variants, CUDA) against separate roundings (the baseline)
    # decided hundreds of them differently before.
    length, weight = extend
    boxes = _edge_boxes(dtype, gen, 240)
    per_image = [boxes[k : k + 3] for k in range(0, len(boxes), 3)]  # overlaps: the first box wins
    kw = dict(bg_extend_length=length, bg_extend_weight=weight, scale_mask="separate")
    got = hcam_ops.bev_masks_from_boxes([b.to(device) for b in per_image], NUS_PC, NUS_CELL, NUS_SHAPE, **kw)
    want = R.bev_masks_from_boxes(per_image, NUS_PC, NUS_CELL, NUS_SHAPE, **kw)
    _check(got, want, dtype, device, (len(per_image), *NUS_SHAPE))


@pytest.mark.parametrize("device", DEVICES)
def test_off_grid_and_empty(device):
    boxes = [
        torch.tensor([[100.0, 0.0, 2.0, 2.0, 0.3]]),  # wholly off
        torch.zeros(0, 5),
        torch.tensor([[-2.0, 0.13, 1.3, 1.3, 0.0]]),  # partly off (x < -2 falls outside)
        torch.tensor([[0.13, 0.13, 40.0, 40.0, 0.0]]),  # covers every cell
    ]
    fg, bg = hcam_ops.bev_masks_from_boxes([b.to(device) for b in boxes], G_PC, G_CELL, G_SHAPE)
    fg, bg = fg.cpu(), bg.cpu()
    for i in (0, 1):
        assert (fg[i] == 0).all()
        torch.testing.assert_close(bg[i], torch.full((9, 9), 1 / 81))
    # x in (-2.65, -1.35) -> x = -2, -1.5; y in (-0.52, 0.78) -> y = -0.5, 0, 0.5
    assert fg[2].count_nonzero() == 6 and (fg[2][3:6, 0:2] > 0).all()
    torch.testing.assert_close(fg[2][3, 0], torch.tensor(max(math.sqrt(0.25 / 1.69), 1 / 75), dtype=torch.float32))
    # no background cell: the background scale is 0 (the published 1 / 0 is inf)
    assert (bg[3] == 0).all() and torch.allclose(fg[3], torch.full((9, 9), math.sqrt(0.25 / 1600)))
    want = R.bev_masks_from_boxes(boxes, G_PC, G_CELL, G_SHAPE)
    _check((fg, bg), want, torch.float32, "cpu", (4, 9, 9))


@pytest.mark.parametrize("device", DEVICES)
def test_overlap_first_box_wins(device):
    small = [0.0, 0.0, 1.3, 1.3, 0.0]  # 3 x 3 cells
    big = [0.13, 0.13, 2.3, 2.3, 0.0]  # 5 x 5 cells, holds the small one's
    s_small, s_big = math.sqrt(0.25 / (1.3 * 1.3)), math.sqrt(0.25 / (2.3 * 2.3))
    for order, centre in [((small, big), s_small), ((big, small), s_big)]:
        b = torch.tensor(order, dtype=torch.float64, device=device)
        fg, _ = hcam_ops.bev_masks_from_boxes([b], G_PC, G_CELL, G_SHAPE, scale_mask="separate")
        fg = fg.cpu()[0]
        assert fg.count_nonzero() == 25
        torch.testing.assert_close(fg[3:6, 3:6], torch.full((3, 3), centre, dtype=torch.float64), rtol=0, atol=0)
        assert fg[2, 2] == s_big


@pytest.mark.parametrize("device", DEVICES)
def test_bg_extend(device):
    # 1 m cells on an 11 x 11 grid about 0; a 3 x 3 m box holds 3 x 3 cell points;
    # extended by 2 cells (2 m in dx and dy) it holds 5 x 5.
    pc, cell, shape = (-5.0, -5.0), 1.0, (11, 11)
    box = torch.tensor([[0.0, 0.0, 3.0, 3.0, 0.0]], dtype=torch.float64, device=device)
    fg, bg = hcam_ops.bev_masks_from_boxes(
        [box], pc, cell, shape, bg_extend_length=2.0, bg_extend_weight=0.5, scale_mask="none"
    )
    fm = torch.zeros(11, 11, dtype=torch.float64)
    fm[3:8, 3:8] = 0.5
    fm[4:7, 4:7] = 1.0
    torch.testing.assert_close(fg[0].cpu(), fm, rtol=0, atol=0)
    fg, bg = hcam_ops.bev_masks_from_boxes([box], pc, cell, shape, bg_extend_length=2.0, bg_extend_weight=0.5)
    # combine: cell_area / box_area (no sqrt where the enlarged box decides), background 1 / 96
    torch.testing.assert_close(fg[0].cpu(), fm * max(1 / 9, 1 / 96), rtol=1e-15, atol=0)
    torch.testing.assert_close(bg[0].cpu(), (fm == 0).double() / 96, rtol=1e-15, atol=0)
    # 1minus: the ring keeps 1 - weight of the background
    _, bg = hcam_ops.bev_masks_from_boxes(
        [box], pc, cell, shape, bg_extend_length=2.0, bg_extend_weight=0.5, scale_mask="none", background="1minus"
    )
    torch.testing.assert_close(bg[0].cpu(), 1 - fm, rtol=0, atol=0)
    # off unless both are positive
    for length, weight in [(2.0, 0.0), (0.0, 0.5)]:
        fg, _ = hcam_ops.bev_masks_from_boxes(
            [box], pc, cell, shape, bg_extend_length=length, bg_extend_weight=weight, scale_mask="separate"
        )
        assert fg.count_nonzero() == 9 and torch.allclose(fg.max(), torch.tensor(1 / 3, dtype=torch.float64))


# --- a tiny transcription of the published code -------------------------------------
def _published_points_in_rbbox(points, rbbox):
    """box_np_ops.points_in_rbbox(points, rbbox, z_axis=2, origin=(0.5, 0.5, 0)), numpy, no numba."""
    dims, centers, angles = rbbox[:, 3:6], rbbox[:, :3], rbbox[:, 6]
    corners_norm = np.stack(np.unravel_index(np.arange(8), [2] * 3), axis=1).astype(dims.dtype)
    corners_norm = corners_norm[[0, 1, 3, 2, 4, 5, 7, 6]] - np.array((0.5, 0.5, 0), dtype=dims.dtype)
    corners = dims.reshape([-1, 1, 3]) * corners_norm.reshape([1, 8, 3])
    s, c = np.sin(angles), np.cos(angles)
    ones, zeros = np.ones_like(c), np.zeros_like(c)
    rot_mat_T = np.stack([[c, -s, zeros], [s, c, zeros], [zeros, zeros, ones]])
    corners = np.einsum("aij,jka->aik", corners, rot_mat_T) + centers.reshape([-1, 1, 3])
    surfaces = np.array(
        [
            [corners[:, 0], corners[:, 1], corners[:, 2], corners[:, 3]],
            [corners[:, 7], corners[:, 6], corners[:, 5], corners[:, 4]],
            [corners[:, 0], corners[:, 3], corners[:, 7], corners[:, 4]],
            [corners[:, 1], corners[:, 5], corners[:, 6], corners[:, 2]],
            [corners[:, 0], corners[:, 4], corners[:, 5], corners[:, 1]],
            [corners[:, 3], corners[:, 2], corners[:, 6], corners[:, 7]],
        ]
    ).transpose([2, 0, 1, 3])[:, :, :3, :]
    vec = surfaces[:, :, :2, :] - surfaces[:, :, 1:3, :]
    normal = np.cross(vec[:, :, 0, :], vec[:, :, 1, :])
    d = -np.einsum("aij, aij->ai", normal, surfaces[:, :, 0, :])
    # points_in_convex_polygon_3d_jit's loop: ((px * nx + py * ny) + pz * nz) + d, in the arrays' dtype
    p, n = points[:, None, None, :], normal[None]
    sign = ((p[..., 0] * n[..., 0] + p[..., 1] * n[..., 1]) + p[..., 2] * n[..., 2]) + d[None]
    return ~(sign >= 0).any(axis=-1)  # [points, boxes]: sign >= 0 on any face -> outside (NaN stays inside)


def _published_masks(boxes, pc, cell, H, W, length=0.0, weight=0.0):
    """foreground_scale_mask + scale_mask='combine_gt', background_mask='logical_not',
    transpose_mask=False, for one sample; boxes [n, 7] in mmdet3d's layout."""
    xs = [i * cell + pc[0] for i in range(W)]
    ys = [j * cell + pc[1] for j in range(H)]
    xs, ys = np.meshgrid(xs, ys, indexing="ij")
    points = np.hstack((xs.reshape(-1, 1), ys.reshape(-1, 1), np.ones((H * W, 1)) * 0.5))
    boxes = boxes.copy()
    boxes[:, 2] = 0
    boxes[:, 5] = 1
    mask = _published_points_in_rbbox(points, boxes)
    foreground_mask = mask.any(axis=-1).astype(float)
    pts, idx = np.nonzero(mask)
    pts, first = np.unique(pts, return_index=True)
    idx = idx[first]
    fg_scale = np.zeros(H * W)
    fg_scale[pts] = np.sqrt(cell * cell / (boxes[idx][:, 3] * boxes[idx][:, 4]))
    if length > 0 and weight > 0:
        enlarged = boxes.copy()
        enlarged[:, 3] += cell * length
        enlarged[:, 4] += cell * length
        emask = _published_points_in_rbbox(points, enlarged)
        foreground_mask = np.maximum(foreground_mask, emask.any(axis=-1).astype(float) * weight)
        pts, idx = np.nonzero(emask)
        pts, first = np.unique(pts, return_index=True)
        idx = idx[first]
        fg_scale[pts] = cell * cell / (boxes[idx][:, 3] * boxes[idx][:, 4])
    bg_scale = np.full(H * W, 1.0 / (H * W - np.sum(foreground_mask != 0)))
    fm, fs, bs = (a.reshape(W, H).transpose() for a in (foreground_mask, fg_scale, bg_scale))
    scale = np.maximum(fs, bs)
    return fm * scale, np.logical_not(fm) * scale


@pytest.mark.parametrize("extend", [(0.0, 0.0), (2.0, 0.3)], ids=str)
def test_matches_published_transcription(extend, gen):
    shape = (21, 27)
    H, W = shape
    length, weight = extend
    for n in (1, 7, 60):
        b5 = _random_boxes(n, gen, shape, torch.float64, extends=(0.0, CELL * length))
        z = torch.zeros(n, 1, dtype=torch.float64)
        b7 = torch.cat([b5[:, :2], z, b5[:, 2:4], z + 1, b5[:, 4:]], 1)
        fg_p, bg_p = _published_masks(b7.numpy(), PC, CELL, H, W, length, weight)
        fg, bg = hcam_ops.bev_masks_from_boxes([b7], PC, CELL, shape, bg_extend_length=length, bg_extend_weight=weight)
        np.testing.assert_allclose(fg[0].numpy(), fg_p, rtol=1e-12, atol=0)
        np.testing.assert_allclose(bg[0].numpy(), bg_p, rtol=1e-12, atol=0)


def _published_grid_points(H, W, pc=(-51.2, -51.2), voxel=0.1, osf=8):
    """The published grid: i * voxel_size[0] * out_size_factor + pc_range[0] with
    float32 voxel_size and pc_range and an integer out_size_factor, in float32;
    x-major, z = 0.5 (foreground_scale_mask)."""
    f = np.float32
    xs = [f(f(f(i) * f(voxel)) * f(osf)) + f(pc[0]) for i in range(W)]
    ys = [f(f(f(j) * f(voxel)) * f(osf)) + f(pc[1]) for j in range(H)]
    xs, ys = np.meshgrid(np.array(xs, dtype=f), np.array(ys, dtype=f), indexing="ij")
    return np.hstack((xs.reshape(-1, 1), ys.reshape(-1, 1), np.full((H * W, 1), 0.5, dtype=f))).astype(f)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_grid_aligned_boxes_match_points_in_rbbox_bit_for_bit(dtype, device, gen):
    """Boxes aligned to the published nuScenes grid (centres on cell points,
    sizes whole multiples of the cell, yaws at multiples of pi/2): many cell
    points lie on a box edge, where only the published arithmetic (float32
    corners, faces, normals, sign >= 0 -> outside) decides. The foreground is
    the published one cell for cell, against a transcription of
    points_in_rbbox in float32 (its boxes are float32 LiDARInstance3DBoxes)."""
    H = W = 128
    points = _published_grid_points(H, W)
    rows = []
    for _ in range(60):
        i, j = torch.randint(4, W - 4, (2,), generator=gen).tolist()
        k, m = torch.randint(1, 7, (2,), generator=gen).tolist()
        quarter = torch.randint(-4, 5, (1,), generator=gen).item()
        rows.append([points[i * H, 0], points[j, 1], 0.0, k * 0.8, m * 0.8, 1.0, quarter * math.pi / 2])
    b7 = np.array(rows, dtype=np.float32)  # the published boxes are float32
    per_image = [slice(n, n + 4) for n in range(0, len(rows), 4)]
    boxes = [torch.from_numpy(b7[sl]).to(dtype).to(device) for sl in per_image]
    fg, _ = hcam_ops.bev_masks_from_boxes(boxes, (-51.2, -51.2), 0.8, (H, W), scale_mask="none")
    on_edges = 0
    for n, sl in enumerate(per_image):
        want = _published_points_in_rbbox(points, b7[sl]).any(axis=-1).reshape(W, H).T
        np.testing.assert_array_equal(fg[n].cpu().numpy() > 0, want, err_msg=f"image {n}")
        # the nominal rule |u| <= dx/2 (edges included) marks more: the edge cells
        on_edges += int((fg[n].cpu().numpy() > 0).sum() < _nominal_closed(points, b7[sl], H, W).sum())
    assert on_edges > len(per_image) // 2  # most images have cells on box edges


def _nominal_closed(points, b7, H, W):
    """Cells within the boxes' closed rectangles by exact (float64) nominal geometry."""
    inside = np.zeros(len(points), dtype=bool)
    for x, y, _, dx, dy, _, yaw in b7.astype(np.float64):
        yaw = round(yaw / (math.pi / 2)) * (math.pi / 2)
        c, s = round(math.cos(yaw)), round(math.sin(yaw))
        ex, ey = points[:, 0].astype(np.float64) - x, points[:, 1].astype(np.float64) - y
        u, v = c * ex - s * ey, s * ex + c * ey
        inside |= (np.abs(u) <= dx / 2 + 1e-4) & (np.abs(v) <= dy / 2 + 1e-4)
    return inside.reshape(W, H).T


def test_cpu_variants_fuse_no_multiply_add():
    """No bev_masks code of any CPU variant holds a fused multiply-add: the
    AVX2 / AVX-512 variants would round the rotation and the grid points once
    where the baseline rounds twice (csrc/ops/bev_masks.h, bev_mul)."""
    import platform
    import re
    import shutil
    import subprocess

    objdump = shutil.which("objdump")
    if objdump is None or platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("needs objdump on x86-64")
    out = subprocess.run(
        [objdump, "-d", "--no-show-raw-insn", "-C", hcam_ops._C.__file__], capture_output=True, text=True, check=True
    )
    fused, seen, fn = set(), set(), ""
    for line in out.stdout.splitlines():
        if line.endswith(">:") and " <" in line:
            fn = line.split(" <", 1)[1][:-2]
        elif "hcam_ops::cpu::bev_masks<" in fn or "hcam_ops::bev_" in fn:
            seen.add(fn)
            if re.match(r"^ +[0-9a-f]+:\tv?fn?m(add|sub)", line):
                fused.add(fn)
    if not any("Isa)1>" in f for f in seen):
        pytest.skip("no AVX2 variant of bev_masks in the library (HCAM_OPS_CPU_VARIANTS=0, or inlined)")
    assert not fused, sorted(fused)


# --- op-level checks -----------------------------------------------------------------
def test_opcheck(gen):
    boxes = _random_boxes(6, gen, (9, 11))
    args = (boxes, torch.tensor([0, 2, 2, 6]), PC[0], PC[1], CELL, CELL, 9, 11)
    torch.library.opcheck(torch.ops.hcam_ops.bev_masks.default, (*args, 0.0, 0.0, "combine", "logical_not"))
    torch.library.opcheck(torch.ops.hcam_ops.bev_masks.default, (*args, 2.0, 0.5, "separate", "1minus"))


@pytest.mark.compile
def test_compile_fullgraph(gen):
    shape = (13, 17)
    boxes = [_random_boxes(8, gen, shape), _random_boxes(3, gen, shape)]

    def f(a, b):
        fg, bg = hcam_ops.bev_masks_from_boxes([a, b], PC, CELL, shape, bg_extend_length=1.0, bg_extend_weight=0.2)
        return fg * 2 + bg

    torch.testing.assert_close(torch.compile(f, fullgraph=True)(*boxes), f(*boxes), rtol=0, atol=0)


@pytest.mark.parametrize(
    "boxes, kw, error, match",
    [
        ([torch.zeros(2, 4)], {}, ValueError, r"boxes\[0\] must be \[n, 5\]"),
        ([torch.zeros(2, 6)], {}, ValueError, r"boxes\[0\] must be \[n, 5\]"),
        ([torch.zeros(2, 5, 1)], {}, ValueError, r"boxes\[0\] must be \[n, 5\]"),
        (torch.zeros(1, 2, 5), {}, TypeError, "one \\[n, 5\\] or \\[n, 7\\+\\] tensor per image"),
        ([], {}, ValueError, "boxes is empty"),
        ([torch.tensor([[0.0, 0.0, 1.0, float("nan"), 0.0]])], {}, ValueError, "NaN or Inf"),
        ([torch.tensor([[0.0, float("inf"), 1.0, 1.0, 0.0]])], {}, ValueError, "NaN or Inf"),
        ([torch.tensor([[0.0, 0.0, 0.0, 1.0, 0.0]])], {}, ValueError, "positive sizes dx, dy"),
        ([torch.tensor([[0.0, 0.0, 1.0, -1.0, 0.0]])], {}, ValueError, "positive sizes dx, dy"),
        ([torch.zeros(0, 5)], dict(cell_size=0.0), ValueError, "cell_size must be positive"),
        ([torch.zeros(0, 5)], dict(cell_size=(0.8, -1.0)), ValueError, "cell_size must be positive"),
        ([torch.zeros(0, 5)], dict(cell_size=float("nan")), ValueError, "cell_size must be finite"),
        ([torch.zeros(0, 5)], dict(feat_shape=(0, 5)), ValueError, "feat_shape must be positive"),
        ([torch.zeros(0, 5)], dict(feat_shape=5), TypeError, "feat_shape must be a pair"),
        ([torch.zeros(0, 5)], dict(pc_range=(1.0, 2.0, 3.0)), ValueError, "pc_range must have 2 or 6"),
        ([torch.zeros(0, 5)], dict(pc_range=(float("inf"), 0.0)), ValueError, "pc_range must be finite"),
        ([torch.zeros(0, 5)], dict(scale_mask="combine_gt"), ValueError, "scale_mask must be one of"),
        ([torch.zeros(0, 5)], dict(background="not"), ValueError, "background must be one of"),
        ([torch.zeros(0, 5)], dict(bg_extend_length=-1.0), ValueError, "must be >= 0"),
        ([torch.zeros(0, 5)], dict(bg_extend_weight=float("nan")), ValueError, "bg_extend_weight must be finite"),
    ],
)
def test_bad_input(boxes, kw, error, match):
    args = dict(pc_range=PC, cell_size=CELL, feat_shape=(7, 7))
    args.update(kw)
    with pytest.raises(error, match=match):
        hcam_ops.bev_masks_from_boxes(boxes, **args)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "change, match",
    [
        (dict(boxes=torch.zeros(3, 7)), r"boxes must be \[N, 5\]"),
        (dict(boxes=torch.zeros(3, 5, dtype=torch.int64)), "boxes must be float32 or float64"),
        (dict(offsets=torch.tensor([0, 3], dtype=torch.int32)), "offsets must be int64"),
        (dict(offsets=torch.tensor([[0, 3]])), r"offsets must be int64 \[B \+ 1\]"),
        (dict(offsets=torch.zeros(0, dtype=torch.int64)), r"offsets must be int64 \[B \+ 1\]"),
        (dict(offsets=torch.tensor([0, 4])), r"offsets must be non-decreasing from 0 to N = boxes.size\(0\) = 3"),
        (dict(offsets=torch.tensor([0, 2])), r"offsets must be non-decreasing from 0 to N .* offsets\[1\] = 2"),
        (dict(offsets=torch.tensor([1, 3])), r"offsets must be non-decreasing from 0 to N .* offsets\[0\] = 1"),
        (dict(offsets=torch.tensor([-1, 3])), "offsets must be non-decreasing from 0 to N"),
        (dict(offsets=torch.tensor([0])), r"offsets must be non-decreasing from 0 to N .* offsets\[0\] = 0"),
        (dict(offsets=torch.tensor([0, 2, 1, 3])), r"offsets\[1\] = 2 > offsets\[2\] = 1"),
        (dict(offsets=torch.tensor([0, 4, 3])), r"offsets\[1\] = 4 > offsets\[2\] = 3"),
        (dict(cell_x=0.0), "cell_size must be positive"),
        (dict(width=0), "feat_shape must be positive"),
        (dict(x_min=float("nan")), "pc_range must be finite"),
        (dict(bg_extend_length=-1.0), "bg_extend_length must be finite and >= 0"),
        (dict(scale_mask="combine_gt"), "scale_mask must be"),
        (dict(background="x"), "background must be"),
    ],
)
def test_op_checks(change, match, device):
    args = dict(
        boxes=torch.zeros(3, 5),
        offsets=torch.tensor([0, 3]),
        x_min=0.0,
        y_min=0.0,
        cell_x=1.0,
        cell_y=1.0,
        height=4,
        width=4,
        bg_extend_length=0.0,
        bg_extend_weight=0.0,
        scale_mask="combine",
        background="logical_not",
    )
    args.update(change)
    args = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in args.items()}
    with pytest.raises(RuntimeError, match=match):
        torch.ops.hcam_ops.bev_masks(*args.values())


@pytest.mark.parametrize("device", DEVICES)
def test_op_offsets_accepted(device):
    # empty images anywhere, no boxes at all
    kw = (0.0, 0.0, 1.0, 1.0, 4, 4, 0.0, 0.0, "combine", "logical_not")
    boxes = torch.tensor([[1.0, 1.0, 1.5, 1.5, 0.0]] * 3, device=device)
    fg, _ = torch.ops.hcam_ops.bev_masks(boxes, torch.tensor([0, 0, 3, 3], device=device), *kw)
    assert fg.shape == (3, 4, 4) and fg[1].count_nonzero() == 1 and fg[0].count_nonzero() == fg[2].count_nonzero() == 0
    fg, _ = torch.ops.hcam_ops.bev_masks(boxes[:0], torch.tensor([0, 0], device=device), *kw)
    assert fg.shape == (1, 4, 4) and fg.count_nonzero() == 0
    fg, _ = torch.ops.hcam_ops.bev_masks(boxes[:0], torch.tensor([0], device=device), *kw)
    assert fg.shape == (0, 4, 4)


@real_cuda_only
def test_op_checks_devices():
    kw = (0.0, 0.0, 1.0, 1.0, 4, 4, 0.0, 0.0, "combine", "logical_not")
    with pytest.raises(RuntimeError, match="boxes and offsets must be on one device"):
        torch.ops.hcam_ops.bev_masks(torch.zeros(3, 5, device="cuda"), torch.tensor([0, 3]), *kw)
    with pytest.raises(RuntimeError, match="boxes and offsets must be on one device"):
        torch.ops.hcam_ops.bev_masks(torch.zeros(3, 5), torch.tensor([0, 3], device="cuda"), *kw)


@cuda_only
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_cuda_matches_cpu(dtype, gen):
    shape = (128, 128)
    boxes = [_random_boxes(n, gen, shape, dtype, extends=(0.0, 2 * CELL)) for n in (0, 1, 40, 700)]
    for kw in [{}, dict(bg_extend_length=2.0, bg_extend_weight=0.4, scale_mask="separate", background="1minus")]:
        a = hcam_ops.bev_masks_from_boxes(boxes, PC, CELL, shape, **kw)
        with run_on("cuda") as dev:
            b = hcam_ops.bev_masks_from_boxes([x.to(dev) for x in boxes], PC, CELL, shape, **kw)
        for x, y in zip(a, b):
            torch.testing.assert_close(y.cpu(), x, rtol=0, atol=0)
