"""hcam_ops.fgd_masks_from_boxes against the one-box-at-a-time reference."""

import pytest
import torch
from conftest import DEVICES, cuda_only, run_on

import hcam_ops
from hcam_ops import reference as R


def _random_boxes(n, img_h, img_w, gen, dtype=torch.float32):
    xy = torch.rand(n, 2, generator=gen, dtype=torch.float64) * torch.tensor([img_w, img_h]) * 1.2 - 20
    wh = torch.rand(n, 2, generator=gen, dtype=torch.float64) * torch.tensor([img_w, img_h]) * 0.5
    return torch.cat([xy, xy + wh], dim=1).to(dtype)


# Edge boxes: partly outside on every side, wholly outside, a point box, one
# covering the whole image, one on a cell boundary.
EDGE = torch.tensor(
    [
        [-30.0, -10.0, 5.0, 7.0],
        [200.0, 190.0, 400.0, 500.0],
        [300.0, 300.0, 400.0, 400.0],
        [12.5, 13.7, 12.5, 13.7],
        [32.0, 64.0, 96.0, 128.0],
    ]
)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("feat_shape", [(1, 1), (7, 9), (28, 28), (25, 38), (100, 152)], ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_parity(dtype, feat_shape, device, gen):
    boxes = [
        _random_boxes(5, 224, 224, gen, dtype),
        torch.zeros(0, 4, dtype=dtype),
        EDGE.to(dtype),
        _random_boxes(300, 224, 224, gen, dtype),  # more boxes than a CUDA block stages at once
    ]
    got = hcam_ops.fgd_masks_from_boxes([b.to(device) for b in boxes], (224, 224), feat_shape)
    want = R.fgd_masks_from_boxes(boxes, (224, 224), feat_shape)
    for g, w in zip(got, want):
        assert g.dtype == dtype and g.device.type == device and g.shape == (4, *feat_shape)
        torch.testing.assert_close(g.cpu(), w, rtol=0, atol=0)


def test_per_image_shapes_and_properties(gen):
    boxes = [_random_boxes(3, 300, 500, gen), _random_boxes(4, 600, 200, gen), torch.zeros(0, 4)]
    shapes = [(300, 500), (600, 200), (100, 100)]
    fg, bg = hcam_ops.fgd_masks_from_boxes(boxes, shapes, (20, 30))
    want = R.fgd_masks_from_boxes(boxes, shapes, (20, 30))
    torch.testing.assert_close(fg, want[0], rtol=0, atol=0)
    torch.testing.assert_close(bg, want[1], rtol=0, atol=0)
    # background sums to 1 where any cell is free; the empty image is all background
    torch.testing.assert_close(bg.sum((1, 2)), torch.ones(3))
    assert (fg[2] == 0).all() and ((fg > 0) != (bg > 0)).all()


def test_box_covering_everything_leaves_no_background():
    fg, bg = hcam_ops.fgd_masks_from_boxes([torch.tensor([[0.0, 0.0, 224.0, 224.0]])], (224, 224), (7, 7))
    assert (fg > 0).all() and (bg == 0).all()
    torch.testing.assert_close(fg, torch.full_like(fg, 1 / 64))  # ceil(7) + 1 - 0 = 8 cells a side


def test_integer_boxes_become_float32():
    fg, _ = hcam_ops.fgd_masks_from_boxes([torch.tensor([[0, 0, 100, 100]])], torch.tensor([224, 224]), (7, 7))
    assert fg.dtype == torch.float32


def test_opcheck(gen):
    boxes = _random_boxes(6, 224, 224, gen)
    torch.library.opcheck(
        torch.ops.hcam_ops.fgd_masks.default,
        (boxes, torch.tensor([0, 2, 2, 6]), torch.full((3, 2), 224.0), 9, 11),
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "offsets, match",
    [
        ([0, 2, 7], r"offsets must be non-decreasing from 0 to N = boxes.size\(0\) = 6, .* offsets\[2\] = 7"),
        ([0, 4, 2, 6], r"offsets\[1\] = 4 > offsets\[2\] = 2"),
        ([1, 6], r"offsets\[0\] = 1"),
    ],
)
def test_op_checks_offsets_on_every_device(offsets, match, device, gen):
    """Checked before dispatch (csrc/ops/box_batch.h), so a CUDA kernel never
    reads boxes past N."""
    boxes = _random_boxes(6, 224, 224, gen).to(device)
    off = torch.tensor(offsets, device=device)
    img = torch.full((len(offsets) - 1, 2), 224.0, device=device)
    with pytest.raises(RuntimeError, match=match):
        torch.ops.hcam_ops.fgd_masks(boxes, off, img, 9, 11)


@pytest.mark.parametrize(
    "boxes, img_shape, feat_shape, error, match",
    [
        ([torch.tensor([[10.0, 10.0, 5.0, 20.0]])], (224, 224), (7, 7), ValueError, "x2 >= x1"),
        ([torch.tensor([[10.0, 30.0, 15.0, 20.0]])], (224, 224), (7, 7), ValueError, "y2 >= y1"),
        ([torch.tensor([[float("nan"), 0.0, 1.0, 1.0]])], (224, 224), (7, 7), ValueError, "NaN or Inf"),
        ([torch.zeros(2, 5)], (224, 224), (7, 7), ValueError, r"must be \[n, 4\]"),
        (torch.zeros(1, 2, 4), (224, 224), (7, 7), TypeError, "one \\[n, 4\\] tensor per image"),
        ([], (224, 224), (7, 7), ValueError, "boxes is empty"),
        ([torch.zeros(1, 4)], (224, 224), (0, 7), ValueError, "feat_shape must be positive"),
        ([torch.zeros(1, 4)], (224, -1), (7, 7), ValueError, "img_shape must be positive"),
        ([torch.zeros(1, 4), torch.zeros(1, 4)], [(1, 1), (2, 2), (3, 3)], (7, 7), ValueError, "one per image"),
    ],
)
def test_bad_input(boxes, img_shape, feat_shape, error, match):
    with pytest.raises(error, match=match):
        hcam_ops.fgd_masks_from_boxes(boxes, img_shape, feat_shape)


@cuda_only
def test_cuda_matches_cpu(gen):
    boxes = [_random_boxes(n, 512, 384, gen) for n in (0, 1, 40, 700)]
    a = hcam_ops.fgd_masks_from_boxes(boxes, (512, 384), (64, 48))
    with run_on("cuda") as dev:
        b = hcam_ops.fgd_masks_from_boxes([x.to(dev) for x in boxes], (512, 384), (64, 48))
    for x, y in zip(a, b):
        torch.testing.assert_close(y.cpu(), x, rtol=0, atol=0)


# Unchecked boxes (check_boxes=False, or under torch.compile): a non-finite
# edge covers nothing on every device (a GPU casts NaN to cell 0, x86 to
# INT64_MIN), and a finite box far beyond the map is clipped to it.
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_unchecked_non_finite_and_huge_boxes(dtype, device):
    nan, inf = float("nan"), float("inf")
    bad = [[nan, 0.0, 10.0, 10.0], [0.0, 0.0, inf, 10.0], [-inf, 0.0, 10.0, 10.0], [0.0, nan, nan, nan]]
    fg, bg = hcam_ops.fgd_masks_from_boxes(
        [torch.tensor(bad, dtype=dtype, device=device)], (64, 64), (8, 8), check_boxes=False
    )
    assert torch.equal(fg.cpu(), torch.zeros(1, 8, 8, dtype=dtype))
    assert torch.equal(bg.cpu(), torch.full((1, 8, 8), 1 / 64, dtype=dtype))

    huge = torch.tensor([[16.0, 24.0, 1e30, 40.0]], dtype=dtype)
    fg, bg = hcam_ops.fgd_masks_from_boxes([huge.to(device)], (64, 64), (8, 8), check_boxes=False)
    x0, y0 = 2, 3  # floor(16 / 64 * 8), floor(24 / 64 * 8)
    xe = torch.ceil(huge[0, 2] / 64 * 8)  # 1.25e29: the area is taken before clipping
    ye = 5  # ceil(40 / 64 * 8)
    expected = torch.zeros(1, 8, 8, dtype=dtype)
    expected[0, y0 : ye + 1, x0:] = 1 / ((ye + 1 - y0) * (xe + 1 - x0))
    assert expected[0, y0, x0] > 0
    torch.testing.assert_close(fg.cpu(), expected, rtol=0, atol=0)
    ref_fg, _ = R.fgd_masks_from_boxes([huge], (64, 64), (8, 8), check_boxes=False)
    torch.testing.assert_close(fg.cpu(), ref_fg, rtol=0, atol=0)


# mmyolo's and mmrazor's gt_info: [B, n_max, 5] rows (label, x1, y1, x2, y2),
# zero rows padding. As given they are boxes at the origin (cell (0, 0) marked);
# padded=True drops them, as a transcription of the published per-image loop
# over the real boxes does.
@pytest.mark.parametrize("device", DEVICES)
def test_padded_gt_info(device, gen):
    real = [_random_boxes(3, 512, 384, gen), _random_boxes(0, 512, 384, gen), _random_boxes(5, 512, 384, gen)]
    real = [b.clamp(min=1.0) for b in real]  # no real box is all zeros
    gt_info = torch.zeros(3, 6, 5)
    for i, b in enumerate(real):
        gt_info[i, : len(b), 0] = 2.0  # a label
        gt_info[i, : len(b), 1:] = b
    padded = gt_info[..., 1:].to(device)
    want = hcam_ops.fgd_masks_from_boxes([b.to(device) for b in real], (512, 384), (32, 24))
    for boxes in (padded, list(padded)):
        got = hcam_ops.fgd_masks_from_boxes(boxes, (512, 384), (32, 24), padded=True)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    ref = R.fgd_masks_from_boxes(list(gt_info[..., 1:]), (512, 384), (32, 24), padded=True)
    torch.testing.assert_close(want[0].cpu(), ref[0], rtol=0, atol=0)
    # Unpadded, the zero rows are boxes at the origin: cell (0, 0) of image 1 (no real box) is marked.
    fg, _ = hcam_ops.fgd_masks_from_boxes(list(padded), (512, 384), (32, 24))
    assert fg[1, 0, 0] == 1.0 and fg[1].count_nonzero() == 1
    with pytest.raises(TypeError, match="padded=True"):
        hcam_ops.fgd_masks_from_boxes(padded, (512, 384), (32, 24))
    with pytest.raises(ValueError, match=r"\[B, n_max, 4\]"):
        hcam_ops.fgd_masks_from_boxes(gt_info.to(device), (512, 384), (32, 24), padded=True)
