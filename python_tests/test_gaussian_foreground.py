"""hcam_ops.distill.gaussian_foreground against a per-box, per-cell NumPy
transcription of the published drawing (qcraftai/distill-bev:
CenterHead.get_targets_single with custom_radius_func / custom_scale_func,
draw_heatmap_gaussian, gaussian_2d, the radius functions of
mmdet3d/core/utils/gaussian.py and BEVDetDistill's draw_scale), the radius
functions on known values, and the published foreground_mask variants."""

import math

import numpy as np
import pytest
import torch
from conftest import CUDA_TENSORS, cuda_only, run_on

from hcam_ops.distill import heatmaps
from hcam_ops.distill.gaussian_foreground import RADIUS_FUNCS, foreground_variant, gaussian_foreground

RADII = ("gaussian_radius", "centerpoint1", "centerpoint2", "centerpoint3", "maxwh")


# ---------------------------------------------------------------- transcription
def _pub_radius(name, height, width, o, scale, dt):
    """The published radius functions on scalars of dtype dt (Python floats
    taken as dt, as torch takes them against a float32 tensor)."""

    def root1():
        b = height + width
        c = width * height * dt(1 - o) / dt(1 + o)
        return (b + np.sqrt(b * b - dt(4) * c)) / dt(2)

    def root2():
        b = dt(2) * (height + width)
        c = dt(1 - o) * width * height
        return (b + np.sqrt(b * b - dt(4 * 4) * c)) / dt(2)

    def root3():
        a = 4 * o
        b = dt(-2 * o) * (height + width)
        c = dt(o - 1) * width * height
        return (b + np.sqrt(b * b - dt(4 * a) * c)) / dt(2)

    if name == "gaussian_radius":
        return min(root1(), root2(), root3())
    if name == "maxwh":
        return max(height, width) * dt(scale)
    return {"centerpoint1": root1, "centerpoint2": root2, "centerpoint3": root3}[name]()


def _published(boxes, pc, cell, shape, *, min_radius=2, overlap=0.1, radius="gaussian_radius", scale=1.0):
    """Per box as get_targets_single, per cell as draw_heatmap_gaussian /
    draw_scale (window = the clipped (2r+1) square, max-merged)."""
    dt = np.float64 if all(b.dtype == torch.float64 for b in boxes) else np.float32
    H, W = shape
    cell_x, cell_y = (cell, cell) if np.isscalar(cell) else cell
    heat = np.zeros((len(boxes), H, W), dt)
    smap = np.zeros((len(boxes), H, W), dt)
    for i, b in enumerate(boxes):
        for row in b.double().numpy().astype(dt):
            x, y, dx, dy = (row[0], row[1], row[2], row[3]) if len(row) == 5 else (row[0], row[1], row[3], row[4])
            width, length = dx / dt(cell_x), dy / dt(cell_y)
            if not (width > 0 and length > 0):
                continue
            r = max(min_radius, int(_pub_radius(radius, length, width, overlap, scale, dt)))
            ix = int((x - dt(pc[0])) / dt(cell_x))  # .to(torch.int32)
            iy = int((y - dt(pc[1])) / dt(cell_y))
            if not (0 <= ix < W and 0 <= iy < H):
                continue
            diameter = 2 * r + 1
            sigma = diameter / 6
            m = (diameter - 1.0) / 2.0
            yy, xx = np.ogrid[-m : m + 1, -m : m + 1]
            gauss = np.exp(-(xx * xx + yy * yy) / (2 * sigma * sigma))
            gauss[gauss < np.finfo(gauss.dtype).eps * gauss.max()] = 0
            value = dt(1) / np.ceil(length * width)
            left, right = min(ix, r), min(W - ix, r + 1)
            top, bottom = min(iy, r), min(H - iy, r + 1)
            for hh in range(iy - top, iy + bottom):
                for ww in range(ix - left, ix + right):
                    g = dt(gauss[hh - iy + r, ww - ix + r])
                    heat[i, hh, ww] = max(heat[i, hh, ww], g)
                    smap[i, hh, ww] = max(smap[i, hh, ww], value)
    return torch.from_numpy(heat), torch.from_numpy(smap)


def _assert_equal_maps(out, ref):
    assert out.dtype == ref.dtype
    assert torch.equal(out != 0, ref != 0), "supports differ"
    # exp in float64 (NumPy vs torch) may differ by an ulp; stored in float32 that is exact but for ties
    rtol = 1e-15 if ref.dtype == torch.float64 else 2.5e-7
    torch.testing.assert_close(out, ref, rtol=rtol, atol=0)


def _random_boxes(rng, pc, cell, shape, counts, cols=7, dtype=torch.float32):
    H, W = shape
    cell_x, cell_y = (cell, cell) if np.isscalar(cell) else cell
    out = []
    for n in counts:
        x = rng.uniform(pc[0] - 3 * cell_x, pc[0] + (W + 3) * cell_x, n)
        y = rng.uniform(pc[1] - 3 * cell_y, pc[1] + (H + 3) * cell_y, n)
        dx, dy = rng.uniform(0.3, 7.0, n), rng.uniform(0.3, 7.0, n)
        yaw = rng.uniform(-math.pi, math.pi, n)
        if cols == 5:
            b = np.stack([x, y, dx, dy, yaw], 1)
        else:
            z, dz = rng.uniform(-2, 1, n), rng.uniform(0.5, 3, n)
            b = np.concatenate([np.stack([x, y, z, dx, dy, dz, yaw], 1), rng.normal(size=(n, cols - 7))], 1)
        out.append(torch.from_numpy(b.reshape(n, cols)).to(dtype))
    return out


GRIDS = [
    ((-3.0, -2.0), 0.8, (7, 9)),
    ((-4.0, -2.5, -5.0, 4.0, 2.5, 3.0), (0.8, 0.6), (13, 11)),
    ((1.0, -6.0), (0.5, 1.1), (5, 17)),
]


# ---------------------------------------------------------------- against the transcription
@pytest.mark.parametrize("radius", RADII)
@pytest.mark.parametrize("grid", range(len(GRIDS)))
def test_random_boxes_match_published(radius, grid):
    pc, cell, shape = GRIDS[grid]
    rng = np.random.default_rng(100 * grid + RADII.index(radius))
    boxes = _random_boxes(rng, pc, cell, shape, counts=[6, 0, 9, 1], cols=(5, 7, 9)[grid])
    scale = 1.3 if radius == "maxwh" else 1.0
    out = gaussian_foreground(boxes, pc, cell, shape, radius=radius, radius_scale=scale)
    ref = _published(boxes, pc, cell, shape, radius=radius, scale=scale)
    assert out[0].shape == (4, *shape)
    _assert_equal_maps(out[0], ref[0])
    _assert_equal_maps(out[1], ref[1])
    assert out[0][1].abs().sum() == 0 and out[1][1].abs().sum() == 0  # the empty image


@pytest.mark.parametrize("min_radius,overlap", [(0, 0.1), (3, 0.7), (1, 0.0)])
def test_min_radius_and_overlap_match_published(min_radius, overlap):
    pc, cell, shape = GRIDS[1]
    boxes = _random_boxes(np.random.default_rng(7), pc, cell, shape, counts=[8, 5])
    out = gaussian_foreground(boxes, pc, cell, shape, min_radius=min_radius, gaussian_overlap=overlap)
    ref = _published(boxes, pc, cell, shape, min_radius=min_radius, overlap=overlap)
    _assert_equal_maps(out[0], ref[0])
    _assert_equal_maps(out[1], ref[1])


def test_border_off_map_and_overlapping_boxes():
    pc, cell, shape = (-2.0, -2.0), 0.5, (9, 7)
    H, W = shape

    def at(cx, cy, dx=2.0, dy=1.5):  # centre given in cells
        return [pc[0] + cx * cell, pc[1] + cy * cell, dx, dy, 0.4]

    rows = [
        at(-0.5, 4.2),  # truncates toward zero: drawn at column 0
        at(-1.2, 4.2),  # column -1: skipped
        at(W - 0.3, 2.5),  # last column
        at(W + 0.1, 2.5),  # off the map: skipped
        at(3.4, H - 0.01),  # last row
        at(3.4, -0.999),  # row 0
        at(3.6, 3.7, 3.0, 3.0),  # two overlapping boxes of different sizes
        at(4.1, 4.6, 1.0, 5.0),
    ]
    boxes = [torch.tensor(rows, dtype=torch.float32), torch.tensor([at(-3.0, -3.0), at(20.0, 1.0)])]
    heat, scale = gaussian_foreground(boxes, pc, cell, shape, min_radius=1)
    ref_heat, ref_scale = _published(boxes, pc, cell, shape, min_radius=1)
    _assert_equal_maps(heat, ref_heat)
    _assert_equal_maps(scale, ref_scale)
    assert heat[0, 4, 0] == 1 and heat[0, 2, W - 1] == 1 and heat[0, H - 1, 3] == 1 and heat[0, 0, 3] == 1
    assert heat[1].abs().sum() == 0 and scale[1].abs().sum() == 0  # both boxes off the map
    # the box at column -1 alone draws nothing
    alone = gaussian_foreground([torch.tensor([rows[1], rows[3]])], pc, cell, shape)
    assert alone[0].abs().sum() == 0 and alone[1].abs().sum() == 0


def test_float64_boxes_match_published_in_float64():
    pc, cell, shape = GRIDS[0]
    boxes = _random_boxes(np.random.default_rng(3), pc, cell, shape, counts=[7, 4], dtype=torch.float64)
    heat, scale = gaussian_foreground(boxes, pc, cell, shape, radius="centerpoint3")
    ref_heat, ref_scale = _published(boxes, pc, cell, shape, radius="centerpoint3")
    assert heat.dtype == torch.float64 and scale.dtype == torch.float64
    _assert_equal_maps(heat, ref_heat)
    _assert_equal_maps(scale, ref_scale)
    # one float32 image makes the whole batch float32; half boxes are read as float32
    mixed = gaussian_foreground([boxes[0], boxes[1].float()], pc, cell, shape)
    half = gaussian_foreground([b.half() for b in boxes], pc, cell, shape)
    assert mixed[0].dtype == torch.float32 and half[0].dtype == torch.float32


# ---------------------------------------------------------------- published rules by hand
def test_single_box_values():
    # 4 m boxes in 0.8 m cells: l = w = 5 cells; gaussian_radius 2.16 -> radius 2.
    heat, scale = gaussian_foreground([torch.tensor([[0.0, 0.0, 4.0, 4.0, 0.3]])], (-4.0, -4.0), 0.8, (11, 11))
    sigma = 5 / 6
    assert heat[0, 5, 5] == 1
    assert heat[0, 5, 6].item() == pytest.approx(math.exp(-1 / (2 * sigma**2)), rel=1e-7)
    assert heat[0, 3, 7].item() == pytest.approx(math.exp(-8 / (2 * sigma**2)), rel=1e-7)
    assert torch.equal((heat[0] != 0).nonzero().amin(0), torch.tensor([3, 3]))
    assert torch.equal((heat[0] != 0).nonzero().amax(0), torch.tensor([7, 7]))
    expected_scale = torch.zeros(11, 11)
    expected_scale[3:8, 3:8] = 1 / 25  # 1 / ceil(5 * 5), the whole window
    torch.testing.assert_close(scale[0], expected_scale, rtol=0, atol=0)
    # ceil of a fractional area: 1.2 m x 2 m = 1.5 x 2.5 cells -> 1 / ceil(3.75) = 1 / 4
    _, s2 = gaussian_foreground([torch.tensor([[0.0, 0.0, 1.2, 2.0, 0.0]])], (-4.0, -4.0), 0.8, (11, 11))
    assert s2[0, 5, 5].item() == 0.25 and s2.amax().item() == 0.25


def _roots(h, w, o):
    r1 = (h + w + math.sqrt((h + w) ** 2 - 4 * w * h * (1 - o) / (1 + o))) / 2
    r2 = (2 * (h + w) + math.sqrt(4 * (h + w) ** 2 - 16 * (1 - o) * w * h)) / 2
    r3 = (-2 * o * (h + w) + math.sqrt(4 * o * o * (h + w) ** 2 + 16 * o * (1 - o) * w * h)) / 2
    return r1, r2, r3


@pytest.mark.parametrize("h,w,o", [(5.0, 5.0, 0.1), (2.5, 11.0, 0.1), (7.0, 3.0, 0.7), (1.0, 1.0, 0.5)])
def test_radius_functions_known_values(h, w, o):
    r1, r2, r3 = _roots(h, w, o)
    if (h, w, o) == (5.0, 5.0, 0.1):  # by hand: (10 + sqrt(100 - 900/11)) / 2, (20 + sqrt(40)) / 2, (-2 + sqrt(40)) / 2
        assert (r1, r2, r3) == pytest.approx((7.1320, 13.1623, 2.1623), abs=1e-4)
    t = lambda v: torch.tensor([v], dtype=torch.float64)
    got = {name: RADIUS_FUNCS[name](t(h), t(w), o, 1.0).item() for name in RADII}
    assert got["centerpoint1"] == pytest.approx(r1, rel=1e-12)
    assert got["centerpoint2"] == pytest.approx(r2, rel=1e-12)
    assert got["centerpoint3"] == pytest.approx(r3, rel=1e-12)  # halved by 2, as in mmdet3d's gaussian_radius
    assert got["gaussian_radius"] == min(got["centerpoint1"], got["centerpoint2"], got["centerpoint3"])
    assert got["maxwh"] == max(h, w)
    assert RADIUS_FUNCS["maxwh"](t(h), t(w), o, 1.5).item() == max(h, w) * 1.5
    # hcam_ops.distill.gaussian_radius is the same formula (computed in float64)
    assert got["gaussian_radius"] == heatmaps.gaussian_radius(t(h), t(w), o).item()


@pytest.mark.parametrize(
    "radius,scale,side",
    [("gaussian_radius", 1.0, 5), ("centerpoint1", 1.0, 15), ("centerpoint2", 1.0, 27), ("centerpoint3", 1.0, 5)]
    + [("maxwh", 1.0, 11), ("maxwh", 1.5, 15)],
)
def test_radius_choice_sets_the_window(radius, scale, side):
    # l = w = 5 cells, overlap 0.1: radii 2.16 / 7.13 / 13.16 / 2.16 / 5 / 7.5 -> int -> window 2r + 1
    box = torch.tensor([[0.0, 0.0, 4.0, 4.0, 0.0]])
    heat, smap = gaussian_foreground(
        [box], (-12.0, -12.0), 0.8, (31, 31), min_radius=0, radius=radius, radius_scale=scale
    )
    r = side // 2
    support = torch.zeros(31, 31, dtype=torch.bool)
    support[15 - r : 16 + r, 15 - r : 16 + r] = True
    assert torch.equal(heat[0] != 0, support) and torch.equal(smap[0] != 0, support)
    assert heat[0, 15, 15 + r].item() == pytest.approx(math.exp(-(r * r) / (2 * (side / 6) ** 2)), rel=1e-6)


def test_min_radius_floor():
    box = torch.tensor([[0.0, 0.0, 0.5, 0.5, 0.0]])  # tiny box: radius int(<1) = 0
    for min_radius in (0, 2, 4):
        heat, _ = gaussian_foreground([box], (-12.0, -12.0), 0.8, (31, 31), min_radius=min_radius)
        assert int((heat[0] != 0).sum()) == (2 * min_radius + 1) ** 2


def test_yaw_and_extra_columns_ignored():
    pc, cell, shape = GRIDS[1]
    b7 = _random_boxes(np.random.default_rng(11), pc, cell, shape, counts=[6, 3], cols=9)
    turned = [b.clone() for b in b7]
    for b in turned:
        b[:, 6] += 1.1
        b[:, 2] += 5.0  # z, dz, velocities play no part
        b[:, 5] *= 3.0
        b[:, 7:] = 0.0
    b5 = [b[:, [0, 1, 3, 4, 6]] for b in b7]
    ref = gaussian_foreground(b7, pc, cell, shape)
    for other in (turned, b5):
        out = gaussian_foreground(other, pc, cell, shape)
        assert torch.equal(out[0], ref[0]) and torch.equal(out[1], ref[1])


def test_no_boxes_and_no_grad():
    heat, scale = gaussian_foreground([torch.zeros(0, 5), torch.zeros(0, 7)], (0.0, 0.0), 1.0, (3, 4))
    assert heat.shape == scale.shape == (2, 3, 4) and heat.abs().sum() == 0 and scale.abs().sum() == 0
    b = torch.tensor([[1.0, 1.0, 2.0, 2.0, 0.0]], requires_grad=True)
    heat, scale = gaussian_foreground([b], (0.0, 0.0), 1.0, (3, 4))
    assert not heat.requires_grad and not scale.requires_grad


@cuda_only
def test_cuda_matches_cpu():
    pc, cell, shape = GRIDS[2]
    boxes = _random_boxes(np.random.default_rng(5), pc, cell, shape, counts=[9, 0, 4])
    for radius in RADII:
        cpu = gaussian_foreground(boxes, pc, cell, shape, radius=radius)
        with run_on("cuda") as dev:
            gpu = gaussian_foreground([b.to(dev) for b in boxes], pc, cell, shape, radius=radius)
        assert gpu[0].device.type == gpu[1].device.type == CUDA_TENSORS
        torch.testing.assert_close(gpu[0].cpu(), cpu[0], rtol=2.5e-7, atol=0)
        assert torch.equal(gpu[1].cpu(), cpu[1])


# ---------------------------------------------------------------- variants
HEAT = torch.tensor([[0.0, 0.5, 1.0], [0.25, 0.0, 0.0]])
GT = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.5, 1.0]])


@pytest.mark.parametrize(
    "name,kwargs,expected",
    [
        ("gauss", {}, [[0.0, 0.5, 1.0], [0.25, 0.0, 0.0]]),
        ("extended_binary", {}, [[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]]),
        ("gauss_plus_extended_binary", {}, [[0.0, 1.5, 2.0], [1.25, 0.0, 0.0]]),
        ("gauss_in_gt", {}, [[0.0, 0.5, 0.0], [0.0, 0.0, 0.0]]),
        ("negative_linear_gauss_in_gt", {"fg_weight": 2.0, "bg_weight": 1.0}, [[0.5, 0.75, 0.0], [0.0, 0.25, 0.5]]),
        ("gauss_plus_binary_clamp", {}, [[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]),  # -1e10 * heat wipes the Gaussian
        ("gauss_plus_binary_clamp", {"gauss_fg_weight": 0.5}, [[1.0, 1.0, 0.5], [0.125, 1.0, 1.0]]),
    ],
)
def test_variants(name, kwargs, expected):
    out = foreground_variant(name, GT, HEAT, **kwargs)
    torch.testing.assert_close(out, torch.tensor(expected), rtol=1e-6, atol=1e-7)


def test_variant_errors():
    for bad in ("gauss_plus_extended_binary_clamp", "gt", "Gauss"):
        with pytest.raises(ValueError, match="name must be one of") as e:
            foreground_variant(bad, GT, HEAT)
        assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="marks it wrong"):
        foreground_variant("gauss_plus_extended_binary_clamp", GT, HEAT)
    with pytest.raises(ValueError, match="fg_weight and bg_weight"):
        foreground_variant("negative_linear_gauss_in_gt", GT, HEAT)
    with pytest.raises(ValueError, match="gt_foreground must be a tensor"):
        foreground_variant("gauss_in_gt", None, HEAT)
    with pytest.raises(ValueError, match="gt_foreground has shape"):
        foreground_variant("gauss_in_gt", GT[:1], HEAT)
    assert torch.equal(foreground_variant("gauss", None, HEAT), HEAT)


# ---------------------------------------------------------------- bad input
_BOX = torch.tensor([[0.0, 0.0, 2.0, 2.0, 0.0]])


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"boxes": _BOX}, "boxes must be a list"),
        ({"boxes": []}, "boxes is empty"),
        ({"boxes": [torch.zeros(2, 6)]}, r"boxes\[0\] must be \[n, 5\]"),
        ({"boxes": [_BOX, torch.zeros(2, 4)]}, r"boxes\[1\] must be \[n, 5\]"),
        ({"boxes": [torch.zeros(5)]}, r"boxes\[0\] must be"),
        ({"boxes": [torch.tensor([[0.0, 0.0, 0.0, 2.0, 0.0]])]}, "positive sizes"),
        ({"boxes": [torch.tensor([[0.0, 0.0, 2.0, -1.0, 0.0]])]}, "positive sizes"),
        ({"boxes": [torch.tensor([[float("nan"), 0.0, 2.0, 2.0, 0.0]])]}, "NaN or Inf"),
        ({"cell_size": 0.0}, "cell_size must be positive"),
        ({"cell_size": (0.5, 0.5, 0.5)}, "cell_size"),
        ({"pc_range": (0.0, 0.0, 0.0)}, "pc_range"),
        ({"feat_shape": (0, 4)}, "feat_shape"),
        ({"radius": "gauss"}, "radius must be one of"),
        ({"radius_scale": 2.0}, "radius_scale applies to radius='maxwh' only"),
        ({"radius": "maxwh", "radius_scale": 0.0}, "radius_scale must be positive"),
        ({"min_radius": -1}, "min_radius"),
        ({"min_radius": 1.5}, "min_radius"),
        ({"gaussian_overlap": 1.5}, "gaussian_overlap"),
        ({"gaussian_overlap": float("nan")}, "gaussian_overlap"),
    ],
)
def test_bad_input(kwargs, match):
    args = {"boxes": [_BOX], "pc_range": (-2.0, -2.0), "cell_size": 0.5, "feat_shape": (7, 7)} | kwargs
    boxes = args.pop("boxes")
    with pytest.raises(ValueError, match=match) as e:
        gaussian_foreground(boxes, args.pop("pc_range"), args.pop("cell_size"), args.pop("feat_shape"), **args)
    msg = str(e.value)
    assert msg.startswith("gaussian_foreground: ") and "\n" not in msg


def test_non_number_grid_is_type_error():
    with pytest.raises(TypeError, match="gaussian_foreground: cell_size must be a number"):
        gaussian_foreground([_BOX], (0.0, 0.0), object(), (3, 3))
