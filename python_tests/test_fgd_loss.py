"""hcam_ops.fgd_loss against hcam_ops.reference.fgd_loss."""

import pytest
import torch
from conftest import DEVICES, DTYPES, HAS_CUDA, NO_CUDA_REASON, assert_close, randn

import hcam_ops
from hcam_ops import reference as R
from hcam_ops.ops.fgd_loss import TERMS

# (B, C, H, W): 1x1 maps, C = 1, C = 3, odd H and W, maps over several CPU
# tiles (64 positions) with a ragged last tile, and a large map.
SHAPES = [(1, 1, 1, 1), (2, 1, 5, 7), (3, 3, 9, 11), (2, 8, 16, 16), (1, 5, 33, 65), (2, 16, 60, 76)]
ALL_TERMS = dict(fg_weight=0.7, bg_weight=0.4, attention_weight=0.3, channel_weight=0.9, spatial_weight=1.3)


def _inputs(shape, dtype, device, gen, layout="contiguous"):
    B, C, H, W = shape
    s = randn(B, C, H, W, gen=gen, dtype=dtype, device=device)
    t = randn(B, C, H, W, gen=gen, dtype=dtype, device=device) * 1.5
    if layout == "channels_last":
        s = s.contiguous(memory_format=torch.channels_last)
        t = t.contiguous(memory_format=torch.channels_last)
    elif layout == "strided":
        s = torch.cat([s, s], dim=3)[..., ::2]
        t = torch.cat([t, t], dim=3)[..., ::2]
    fg = torch.rand(B, H, W, generator=gen, dtype=torch.float64).to(device) * (
        torch.rand(B, H, W, generator=gen) < 0.4
    ).to(device)
    bg = (fg == 0).double() / (fg == 0).double().sum((1, 2), keepdim=True).clamp_min(1)
    return s.requires_grad_(), t, fg, bg.unsqueeze(1)


def _check(s, t, fg, bg, dtype, **kw):
    got = hcam_ops.fgd_loss(s, t, fg, bg, **kw)
    sd = s.detach().double().requires_grad_()
    want = R.fgd_loss(sd, t.double(), fg, bg, **kw)
    assert list(got) == list(TERMS)
    up = torch.rand(len(TERMS), generator=torch.Generator().manual_seed(7), dtype=torch.float64) + 0.5
    for k in TERMS:
        assert got[k].shape == () and got[k].dtype == s.dtype
        assert_close(got[k], want[k], dtype, k)
    (gs,) = torch.autograd.grad(sum(u * got[k] for u, k in zip(up.tolist(), TERMS)), s)
    (ws,) = torch.autograd.grad(sum(u * want[k] for u, k in zip(up.tolist(), TERMS)), sd)
    assert_close(gs, ws, dtype, "d student")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("spatial_attention", ["teacher", "combined"])
def test_parity(spatial_attention, shape, dtype, device, gen):
    s, t, fg, bg = _inputs(shape, dtype, device, gen)
    _check(s, t, fg, bg, dtype, spatial_attention=spatial_attention, **ALL_TERMS)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", ["channels_last", "strided"])
def test_non_contiguous_maps(layout, device, gen):
    s, t, fg, bg = _inputs((2, 6, 7, 10), torch.float32, device, gen, layout)
    assert not s.is_contiguous()
    _check(s, t, fg, bg, torch.float32, **ALL_TERMS)


@pytest.mark.parametrize("temps", [(0.5, 0.5), (0.1, 2.0), (3.0, 0.05)])
def test_temperatures_and_default_weights(temps, gen):
    s, t, fg, bg = _inputs((2, 12, 9, 14), torch.float64, "cpu", gen)
    _check(s, t, fg, bg, torch.float64, spatial_temperature=temps[0], channel_temperature=temps[1])


def test_each_term_alone(gen):
    """Each weight moves only its own term, and the gradient of one term is
    that term's alone (the upstream gradient is per term, not a sum)."""
    s, t, fg, bg = _inputs((2, 4, 6, 5), torch.float64, "cpu", gen)
    names = ["fg_weight", "bg_weight", "attention_weight", "channel_weight", "spatial_weight"]
    for name, term in zip(names, TERMS):
        kw = {n: (1.0 if n == name else 0.0) for n in names}
        got = hcam_ops.fgd_loss(s, t, fg, bg, **kw)
        want = R.fgd_loss(s, t, fg, bg, **kw)
        assert all(float(got[k].detach()) == 0.0 for k in TERMS if k != term)
        assert float(got[term].detach()) != 0.0
        (a,) = torch.autograd.grad(got[term], s)
        (b,) = torch.autograd.grad(want[term], s)
        assert_close(a, b, torch.float64, term)


def test_gradcheck(gen):
    """The teacher weighting only: "combined" weights by the student's own
    attention with a stop-gradient, which finite differences would see; its
    gradient is checked against the reference's autograd in test_parity."""
    spatial_attention = "teacher"
    s, t, fg, bg = _inputs((2, 3, 4, 5), torch.float64, "cpu", gen)

    def f(s):
        out = hcam_ops.fgd_loss(s, t, fg, bg, spatial_attention=spatial_attention, **ALL_TERMS)
        return torch.stack(list(out.values()))

    assert torch.autograd.gradcheck(f, (s,))


def test_teacher_and_masks_get_no_gradient(gen):
    s, t, fg, bg = _inputs((2, 3, 4, 5), torch.float64, "cpu", gen)
    t.requires_grad_()
    fg.requires_grad_()
    out = hcam_ops.fgd_loss(s, t, fg, bg, **ALL_TERMS)
    sum(out.values()).backward()
    assert s.grad is not None and t.grad is None and fg.grad is None


def test_opcheck(gen):
    s, t, fg, bg = _inputs((2, 3, 5, 7), torch.float32, "cpu", gen)
    fg, bg = fg.float(), bg.float()
    args = (0.5, 0.7, [0.1, 0.2, 0.3, 0.4, 0.5])
    torch.library.opcheck(torch.ops.hcam_ops.fgd_loss_forward.default, (s, t, fg, bg, *args, True))
    _, col, row, sample = torch.ops.hcam_ops.fgd_loss_forward(s.detach(), t, fg, bg, *args, False)
    torch.library.opcheck(
        torch.ops.hcam_ops.fgd_loss_backward.default,
        (torch.rand(5), s.detach(), t, fg, bg, col, row, sample, *args, False),
    )


@pytest.mark.compile
def test_compile_fullgraph(gen):
    s, t, fg, bg = _inputs((2, 4, 6, 7), torch.float32, "cpu", gen)

    def step(s, t):
        out = hcam_ops.fgd_loss(s, t, fg, bg, spatial_attention="combined", **ALL_TERMS)
        return out["loss_fg"] + 2.0 * out["loss_attention"] + out["loss_spatial"]

    compiled = torch.compile(step, fullgraph=True)
    a, b = compiled(s, t), step(s, t)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(torch.autograd.grad(a, s)[0], torch.autograd.grad(b, s)[0])


def test_empty_batch():
    s = torch.randn(0, 4, 5, 6, requires_grad=True)
    out = hcam_ops.fgd_loss(s, torch.randn(0, 4, 5, 6), torch.zeros(0, 5, 6), torch.zeros(0, 5, 6), **ALL_TERMS)
    assert all(float(v) == 0.0 for v in out.values())
    (g,) = torch.autograd.grad(sum(out.values()), s)
    assert g.shape == s.shape


def test_unchecked_nan_propagates(gen):
    s, t, fg, bg = _inputs((2, 3, 4, 5), torch.float32, "cpu", gen)
    s = s.detach().clone()
    s[1, 0, 2, 2] = float("nan")
    out = hcam_ops.fgd_loss(s, t, fg, bg, check_finite=False, **ALL_TERMS)
    assert torch.isnan(out["loss_fg"] + out["loss_bg"])


@pytest.mark.skipif(not HAS_CUDA, reason=NO_CUDA_REASON)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(2, 7, 13, 17), (3, 64, 48, 40), (1, 3, 100, 152)], ids=str)
@pytest.mark.parametrize("spatial_attention", ["teacher", "combined"])
def test_cuda_matches_cpu(spatial_attention, shape, dtype, gen):
    s, t, fg, bg = _inputs(shape, dtype, "cpu", gen)
    out = {}
    for device in ("cpu", "cuda"):
        sd = s.detach().to(device).requires_grad_()
        terms = hcam_ops.fgd_loss(
            sd, t.to(device), fg.to(device), bg.to(device), spatial_attention=spatial_attention, **ALL_TERMS
        )
        out[device] = (*terms.values(), torch.autograd.grad(sum(terms.values()), sd)[0])
    for a, b in zip(out["cuda"], out["cpu"]):
        assert_close(a.cpu(), b, dtype if dtype != torch.float64 else torch.float32, "cuda vs cpu")
