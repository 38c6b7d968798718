"""fgd_loss: bad input gets a clear error."""

import pytest
import torch
from conftest import real_cuda_only

import hcam_ops


def _good(gen):
    s = torch.randn(2, 3, 4, 5, generator=gen)
    return dict(
        student=s,
        teacher=torch.randn(2, 3, 4, 5, generator=gen),
        fg_mask=torch.rand(2, 4, 5, generator=gen),
        bg_mask=torch.rand(2, 1, 4, 5, generator=gen),
    )


def _nan(x, v=float("nan")):
    x = x.clone()
    x[0, 0, 0, 0] = v
    return x


CASES = [
    ("teacher", lambda a: torch.randn(2, 3, 4, 6), ValueError, "one shape"),
    ("teacher", lambda a: a["teacher"].int(), TypeError, "teacher must be float"),
    ("student", lambda a: torch.randn(2, 3, 20), ValueError, r"\[B, C, H, W\]"),
    ("student", lambda a: a["student"].long(), TypeError, "float16, bfloat16"),
    ("fg_mask", lambda a: torch.rand(2, 5, 4), ValueError, "fg_mask must be"),
    ("bg_mask", lambda a: torch.rand(2, 2, 4, 5), ValueError, "bg_mask must be"),
    ("fg_mask", lambda a: a["fg_mask"].numpy(), TypeError, "fg_mask must be a tensor"),
    ("fp_mask", lambda a: torch.rand(2, 4, 4), ValueError, "fp_mask must be"),
    ("fp_mask", lambda a: torch.rand(2, 3, 4, 5), ValueError, "fp_mask must be"),
    ("fp_mask", lambda a: a["fg_mask"].numpy(), TypeError, "fp_mask must be a tensor"),
    ("student", lambda a: _nan(a["student"]), ValueError, "not finite"),
    ("teacher", lambda a: _nan(a["teacher"], float("inf")), ValueError, "not finite"),
]


@pytest.mark.parametrize("name, change, error, match", CASES)
def test_bad_tensors(name, change, error, match, gen):
    args = _good(gen)
    args[name] = change(args)
    with pytest.raises(error, match=match):
        hcam_ops.fgd_loss(**args)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(spatial_temperature=-0.5), "spatial_temperature must be positive"),
        (dict(channel_temperature=0.0), "channel_temperature must be positive"),
        (dict(spatial_attention="student"), "spatial_attention must be one of"),
        (dict(fg_weight=float("inf")), "fg_weight must be finite"),
        (dict(fp_weight=float("nan")), "fp_weight must be finite"),
        (dict(spatial_student_ratio=-1.0), "spatial_student_ratio must be non-negative"),
        (dict(spatial_student_ratio=float("inf")), "spatial_student_ratio must be non-negative"),
    ],
)
def test_bad_options(kw, match, gen):
    with pytest.raises(ValueError, match=match):
        hcam_ops.fgd_loss(**_good(gen), **kw)


@pytest.mark.parametrize("name", ["spatial_mask", "channel_mask"])
def test_switch_must_be_bool(name, gen):
    with pytest.raises(TypeError, match=f"{name} must be a bool"):
        hcam_ops.fgd_loss(**_good(gen), **{name: "no"})


def test_no_channels():
    z = torch.randn(2, 0, 4, 5)
    with pytest.raises(ValueError, match="C > 0"):
        hcam_ops.fgd_loss(z, z, torch.rand(2, 4, 5), torch.rand(2, 4, 5))


def test_kernel_checks_reach_cpp(gen):
    """The op itself checks too (for callers of torch.ops.hcam_ops directly)."""
    a = _good(gen)
    s, t, fg, bg = a["student"], a["teacher"], a["fg_mask"], a["bg_mask"]
    tail = (0, 1.0, True, True)
    cases = [
        ((s, t, fg, bg, None, -1.0, 0.5, [1.0] * 6, *tail), "spatial_temperature must be positive"),
        ((s, t[:1], fg, bg, None, 0.5, 0.5, [1.0] * 6, *tail), "must have one shape"),
        ((s, t, fg, bg, None, 0.5, 0.5, [1.0] * 5, *tail), "weights must hold 6 values"),
        ((s, t, fg, bg, None, 0.5, 0.5, [1.0] * 6, 3, 1.0, True, True), "spatial_mode must be 0"),
        ((s, t, fg, bg, None, 0.5, 0.5, [1.0] * 6, 2, -0.5, True, True), "spatial_student_ratio must be"),
        ((s, t, fg, bg, torch.rand(2, 4, 6), 0.5, 0.5, [1.0] * 6, *tail), "fp_mask must be"),
        ((s, t, fg, bg, torch.ones(2, 4, 5, dtype=torch.int32), 0.5, 0.5, [1.0] * 6, *tail), "fp_mask must be a float"),
    ]
    for args, match in cases:
        with pytest.raises(RuntimeError, match=match):
            torch.ops.hcam_ops.fgd_loss(*args)


@real_cuda_only
def test_device_mix(gen):
    a = _good(gen)
    a["teacher"] = a["teacher"].cuda()
    with pytest.raises(ValueError, match="teacher is on cuda"):
        hcam_ops.fgd_loss(**a)
    a = _good(gen)
    a["fp_mask"] = torch.rand(2, 4, 5).cuda()
    with pytest.raises(ValueError, match="fp_mask"):
        hcam_ops.fgd_loss(**a)
