"""The ops' Python faces check their int, size and float arguments as PyTorch
does, and every error names the argument as the caller wrote it, in one line."""

import pytest
import torch

import hcam_ops
from hcam_ops import reference as R


def raises_one_line(error, match, fn):
    with pytest.raises(error, match=match) as info:
        fn()
    assert "\n" not in str(info.value)
    return str(info.value)


def _arcface(**kw):
    gen = torch.Generator().manual_seed(0)
    f, w = torch.randn(2, 4, generator=gen), torch.randn(3, 4, generator=gen)
    return hcam_ops.multilabel_arcface_loss(f, w, torch.zeros(2, 3, dtype=torch.bool), **kw)


@pytest.mark.parametrize(
    "chunk_size, error, match",
    [
        (0, ValueError, "chunk_size must be positive, got 0"),
        (-5, ValueError, "chunk_size must be positive, got -5"),
        (2.5, TypeError, "chunk_size must be an int, got float 2.5"),
        (4.0, TypeError, "chunk_size must be an int"),
        (True, TypeError, "chunk_size must be an int, got bool"),
        (2**63, ValueError, "chunk_size is too large: 9223372036854775808"),
    ],
)
def test_chunk_size(chunk_size, error, match):
    raises_one_line(error, match, lambda: _arcface(chunk_size=chunk_size))


def test_chunk_size_past_k_is_k():
    torch.testing.assert_close(_arcface(chunk_size=2**40), _arcface(chunk_size=3))


def _cam_kl(**kw):
    x, wf, wc = torch.randn(3, 10, 6), torch.randn(5, 6), torch.randn(2, 6)
    return hcam_ops.cam_kl_loss(x, wf, wc, torch.tensor([0, 4, 2]), torch.tensor([1, 0, 1]), **kw)


def _fgd(**kw):
    s = torch.randn(2, 3, 4, 5)
    args = dict(student=s, teacher=torch.randn(2, 3, 4, 5), fg_mask=torch.rand(2, 4, 5), bg_mask=torch.rand(2, 4, 5))
    return hcam_ops.fgd_loss(**{**args, **kw})


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda v: _cam_kl(temperature=v), "temperature"),
        (lambda v: _cam_kl(eps=v), "eps"),
        (lambda v: hcam_ops.softmax_kl(torch.randn(2, 3), torch.randn(2, 3), temperature=v), "temperature"),
        (lambda v: _fgd(spatial_temperature=v), "spatial_temperature"),
        (lambda v: _fgd(channel_temperature=v), "channel_temperature"),
        (lambda v: _fgd(fg_weight=v), "fg_weight"),
        (lambda v: _fgd(spatial_student_ratio=v), "spatial_student_ratio"),
        (lambda v: _arcface(scale=v), "scale"),
        (lambda v: _arcface(margin=v), "margin"),
    ],
)
def test_float_argument_must_be_a_number(call, name):
    raises_one_line(TypeError, f"{name} must be a real number, got str '1'", lambda: call("1"))


_BOX = [torch.tensor([[0.0, 0.0, 5.0, 5.0]])]
_BEV_BOX = [torch.tensor([[0.0, 0.0, 1.0, 1.0, 0.0]])]


@pytest.mark.parametrize(
    "call, error, match",
    [
        (
            lambda: hcam_ops.fgd_masks_from_boxes(_BOX, (10, 10), (4.5, 4)),
            TypeError,
            r"feat_shape must be a pair of ints",
        ),
        (
            lambda: hcam_ops.fgd_masks_from_boxes(_BOX, (10.5, 10.5), (4, 4)),
            TypeError,
            "img_shape must be a pair of ints",
        ),
        (
            lambda: hcam_ops.fgd_masks_from_boxes(_BOX, [(10, 10.5)], (4, 4)),
            TypeError,
            "img_shape must be a pair of ints",
        ),
        (
            lambda: hcam_ops.bev_masks_from_boxes(_BEV_BOX, (0, 0), 1.0, (4.5, 4)),
            TypeError,
            "feat_shape must be a pair of ints",
        ),
        (
            lambda: hcam_ops.fgd_masks_from_boxes(_BOX, (10, 10), (2**31, 2**31)),
            ValueError,
            r"feat_shape \(2147483648, 2147483648\) is too large: the output \[1, 2147483648, 2147483648\]",
        ),
        (
            lambda: hcam_ops.fgd_masks_from_boxes(_BOX, (10, 10), (2**40, 2**20)),
            ValueError,
            r"feat_shape \(1099511627776, 1048576\) is too large: the output would take \d+ bytes",
        ),
        (
            lambda: hcam_ops.bev_masks_from_boxes(_BEV_BOX, (0, 0), 1.0, (2**40, 2**20)),
            ValueError,
            r"bev_masks_from_boxes: feat_shape \(1099511627776, 1048576\) is too large",
        ),
        (lambda: hcam_ops.fgd_masks_from_boxes(_BOX, (10, 10), (2**63, 2)), ValueError, "feat_shape is too large"),
    ],
)
def test_mask_shapes(call, error, match):
    raises_one_line(error, match, call)


_POINTS = torch.randn(1, 5, 3)


@pytest.mark.parametrize(
    "kw, error, match",
    [
        (dict(k=2.5), TypeError, "k must be an int, got float 2.5"),
        (dict(k=True), TypeError, "k must be an int, got bool"),
        (dict(k=2, start=1.5), TypeError, "start must be an int, got float 1.5"),
        (
            dict(k=2, mask=torch.ones(1, 5, dtype=torch.bool, device="meta")),
            ValueError,
            "mask is on meta, points on cpu",
        ),
    ],
)
def test_farthest_point_sample_arguments(kw, error, match):
    raises_one_line(error, match, lambda: hcam_ops.farthest_point_sample(_POINTS, **kw))


_X, _SEG = torch.randn(1, 2, 2, 3), torch.zeros(1, 2, 2, dtype=torch.long)


@pytest.mark.parametrize(
    "num_segments, error, match",
    [
        (2.5, TypeError, "num_segments must be an int, got float 2.5"),
        (2.0, TypeError, "num_segments must be an int"),
        (2**63, ValueError, "num_segments is too large: 9223372036854775808 does not fit int64"),
        (2**62, ValueError, r"num_segments 4611686018427387904 is too large: the output \[1, 4611686018427387904, 3\]"),
        (2**40, ValueError, r"num_segments 1099511627776 is too large: the output would take \d+ bytes"),
        (0, ValueError, "num_segments must be positive"),
    ],
)
def test_segment_mean_num_segments(num_segments, error, match):
    raises_one_line(error, match, lambda: hcam_ops.segment_mean(_X, _SEG, num_segments))


# A box whose 1 / area float32 cannot hold (its area overflows) used to be
# marked 0, as if absent; the docs say it is clipped: it is clipped to the
# image first, as mmdet clips FGD's boxes.
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_huge_box_is_clipped_not_dropped(dtype):
    big = 1e20 if dtype == torch.float32 else 1e160
    boxes = [
        torch.tensor([[16.0, 24.0, big, big], [-big, -big, -2 * big / 3, 40.0], [2 * big, 0, 3 * big, 8]], dtype=dtype)
    ]
    fg, bg = hcam_ops.fgd_masks_from_boxes(boxes, (64, 64), (8, 8))
    expected = torch.zeros(1, 8, 8, dtype=dtype)
    expected[0, 3:, 2:] = 1 / ((8 + 1 - 3) * (8 + 1 - 2))  # clipped to the image: x2 = img_w gives x_max = W
    torch.testing.assert_close(fg, expected, rtol=0, atol=0)  # the boxes wholly outside cover nothing
    assert torch.equal(bg > 0, fg == 0)
    for got, want in zip((fg, bg), R.fgd_masks_from_boxes(boxes, (64, 64), (8, 8))):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(temperature=0.0), r"^cam_kl_loss: temperature"),
        (dict(fw=torch.randn(5, 4)), r"^cam_kl_loss: fine_weight has 4 channels"),
        (dict(cw=torch.randn(2, 6).long()), r"^cam_kl_loss: coarse_weight must be float"),
        (dict(fi=torch.tensor([0, 4, 9])), r"^cam_kl_loss: fine_index holds class 9"),
        (dict(ci=torch.tensor([0, 1], dtype=torch.int32)), r"^cam_kl_loss: coarse_index must be int64"),
        (dict(ci=torch.tensor([0, 1])), r"^cam_kl_loss: coarse_index must be \[B\]"),
        (dict(fw=torch.randn(5, 6, device="meta")), r"^cam_kl_loss: fine_weight is on meta"),
        (dict(reduction="mean"), r"^cam_kl_loss: reduction must be one of"),
    ],
)
def test_cam_kl_loss_names_its_own_arguments(change, match):
    a = dict(x=torch.randn(3, 10, 6), fw=torch.randn(5, 6), cw=torch.randn(2, 6))
    a.update(fi=torch.tensor([0, 4, 2]), ci=torch.tensor([1, 0, 1]))
    kw = {k: change.pop(k) for k in ("temperature", "reduction") if k in change}
    a.update(change)
    message = raises_one_line(
        (ValueError, TypeError, IndexError), match, lambda: hcam_ops.cam_kl_loss(*a.values(), **kw)
    )
    assert "hierarchical" not in message and "weights[" not in message and "indices[" not in message


def test_hierarchical_names_stay():
    x, w = torch.randn(3, 10, 6), torch.randn(5, 6)
    raises_one_line(
        IndexError,
        r"^hierarchical_cam_kl_loss: indices\[1\] holds class 7",
        lambda: hcam_ops.hierarchical_cam_kl_loss(x, [w, w], [torch.tensor([0, 1, 2]), torch.tensor([0, 7, 1])]),
    )


def _nan(t):
    t = t.clone()
    t.view(-1)[0] = float("nan")
    return t


@pytest.mark.parametrize("name", ["student", "teacher", "fg_mask", "bg_mask", "fp_mask"])
def test_fgd_loss_names_the_input_that_holds_nan(name):
    kw = dict(fp_mask=torch.rand(2, 4, 5), fp_weight=1.0)
    base = dict(student=torch.randn(2, 3, 4, 5), teacher=torch.randn(2, 3, 4, 5))
    base.update(fg_mask=torch.rand(2, 4, 5), bg_mask=torch.rand(2, 4, 5), **kw)
    base[name] = _nan(base[name])
    message = raises_one_line(ValueError, f"the loss is not finite: {name} holds NaN or Inf", lambda: _fgd(**base))
    assert {"student", "teacher", "fg_mask", "bg_mask", "fp_mask"} - {name} & set(
        message.replace(":", " ").split()
    ) == set()


def test_fgd_loss_device_errors_name_the_student():
    raises_one_line(
        ValueError,
        "fgd_loss: fg_mask is on meta, student on cpu",
        lambda: _fgd(fg_mask=torch.rand(2, 4, 5, device="meta")),
    )
