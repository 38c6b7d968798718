"""fgd_loss: bad input gets a clear error."""

import pytest
import torch
from conftest import HAS_CUDA, NO_CUDA_REASON

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
    ],
)
def test_bad_options(kw, match, gen):
    with pytest.raises(ValueError, match=match):
        hcam_ops.fgd_loss(**_good(gen), **kw)


def test_no_channels():
    z = torch.randn(2, 0, 4, 5)
    with pytest.raises(ValueError, match="C > 0"):
        hcam_ops.fgd_loss(z, z, torch.rand(2, 4, 5), torch.rand(2, 4, 5))


def test_kernel_checks_reach_cpp(gen):
    """The op itself checks too (for callers of torch.ops.hcam_ops directly)."""
    a = _good(gen)
    with pytest.raises(RuntimeError, match="spatial_temperature must be positive"):
        torch.ops.hcam_ops.fgd_loss_forward(
            a["student"], a["teacher"], a["fg_mask"], a["bg_mask"], -1.0, 0.5, [1.0] * 5, False
        )
    with pytest.raises(RuntimeError, match="must have one shape"):
        torch.ops.hcam_ops.fgd_loss_forward(
            a["student"], a["teacher"][:1], a["fg_mask"], a["bg_mask"], 0.5, 0.5, [1.0] * 5, False
        )


@pytest.mark.skipif(not HAS_CUDA, reason=NO_CUDA_REASON)
def test_device_mix(gen):
    a = _good(gen)
    a["teacher"] = a["teacher"].cuda()
    with pytest.raises(ValueError, match="teacher is on cuda"):
        hcam_ops.fgd_loss(**a)
