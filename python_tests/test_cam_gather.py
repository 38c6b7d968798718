"""hcam_ops.cam_gather against hcam_ops.reference.cam_gather."""

import pytest
import torch
from conftest import DEVICES, DTYPES, assert_close, cuda_only, make_features, randint, randn, run_on

import hcam_ops
from hcam_ops import reference as R

SHAPES = [(1, 1, 1, 1), (2, 7, 3, 4), (3, 30, 13, 5), (2, 64, 24, 10), (1, 3136, 8, 3)]  # (B, N, C, K)
LAYOUTS = ["tokens", "tokens_t", "map", "map_cl", "strided"]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("levels", [None, 1, 3, 6])
def test_parity(levels, shape, layout, dtype, device, gen):
    """index [B] gives [B, N]; index [B, L] gives [B, L, N] (L > 4 runs in groups)."""
    B, N, C, K = shape
    x = make_features(B, N, C, layout, dtype, device, gen)
    w = randn(K, C, gen=gen, dtype=dtype, device=device, requires_grad=True)
    idx = randint(K, (B,) if levels is None else (B, levels), gen, device)
    cams = hcam_ops.cam_gather(x, w, idx)
    xd, wd = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    ref = R.cam_gather(xd, wd, idx)
    assert cams.shape == ref.shape and cams.dtype == dtype
    assert_close(cams, ref, dtype, "cams")
    g = torch.randn(ref.shape, generator=gen, dtype=torch.float64)
    gx, gw = torch.autograd.grad(cams, [x, w], g.to(device=device, dtype=dtype))
    rx, rw = torch.autograd.grad(ref, [xd, wd], g.to(device))
    assert_close(gx, rx, dtype, "d features")
    assert_close(gw, rw, dtype, "d weight")


def test_conv_weight_accepted(gen):
    x = torch.randn(2, 6, 4, 5, generator=gen, dtype=torch.float64)
    conv = torch.nn.Conv2d(6, 3, 1, bias=False).double()
    idx = torch.tensor([2, 0])
    assert_close(hcam_ops.cam_gather(x, conv.weight, idx), R.cam_gather(x, conv.weight, idx), torch.float64, "cams")
    # The map of a 1x1 conv head is the head's own output at that class.
    assert_close(
        hcam_ops.cam_gather(x, conv.weight, idx), conv(x)[torch.arange(2), idx].flatten(1), torch.float64, "conv"
    )


@pytest.mark.parametrize("index_shape", [(4,), (4, 2)])
def test_gradcheck(index_shape, gen):
    x = torch.randn(4, 3, 2, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    idx = torch.randint(0, 5, index_shape, generator=gen)
    assert torch.autograd.gradcheck(lambda x, w: hcam_ops.cam_gather(x, w, idx), (x, w))
    xt = torch.randn(4, 3, 6, generator=gen, dtype=torch.float64).transpose(1, 2).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, w: hcam_ops.cam_gather(x, w, idx), (xt, w))


def test_opcheck(gen):
    x = torch.randn(3, 6, 5, generator=gen)
    w = torch.randn(4, 5, generator=gen, requires_grad=True)
    idx = torch.randint(0, 4, (3, 2), generator=gen)
    torch.library.opcheck(torch.ops.hcam_ops.cam_gather.default, (x.requires_grad_(), w, idx))
    xm = torch.randn(3, 5, 2, 3, generator=gen).contiguous(memory_format=torch.channels_last)
    torch.library.opcheck(torch.ops.hcam_ops.cam_gather.default, (xm, w, idx))
    for output_mask in ([True, True], [True, False], [False, True]):
        torch.library.opcheck(
            torch.ops.hcam_ops.cam_gather_backward.default,
            (torch.randn(3, 2, 6), x.detach(), w.detach(), idx, output_mask),
        )


def test_errors(gen):
    x = torch.randn(2, 6, 5, generator=gen)
    w = torch.randn(4, 5, generator=gen)
    with pytest.raises(IndexError, match=r"outside \[0, 4\)"):
        hcam_ops.cam_gather(x, w, torch.tensor([0, 4]))
    with pytest.raises(ValueError, match=r"\[B\] or \[B, L\]"):
        hcam_ops.cam_gather(x, w, torch.zeros(2, 1, 1, dtype=torch.long))
    with pytest.raises(TypeError, match="int64"):
        hcam_ops.cam_gather(x, w, torch.tensor([0, 1.0]))
    with pytest.raises(ValueError, match="5 channels|channels, features have"):
        hcam_ops.cam_gather(x, w[:, :3], torch.tensor([0, 1]))
    with pytest.raises(RuntimeError, match=r"outside \[0, 4\)"):
        hcam_ops.cam_gather(x, w, torch.tensor([0, 9]), check_index=False)


def test_empty_batch():
    x = torch.randn(0, 6, 5, requires_grad=True)
    w = torch.randn(4, 5, requires_grad=True)
    cams = hcam_ops.cam_gather(x, w, torch.zeros(0, dtype=torch.long))
    assert cams.shape == (0, 6)
    gx, gw = torch.autograd.grad(cams.sum(), [x, w])
    assert gx.shape == x.shape and torch.all(gw == 0)


@cuda_only
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_cuda_matches_cpu(dtype, layout, gen):
    x = make_features(5, 196, 48, layout, dtype, "cpu", gen, requires_grad=False)
    w = randn(9, 48, gen=gen, dtype=dtype, device="cpu")
    idx = randint(9, (5, 3), gen, "cpu")
    g = torch.randn(5, 3, 196, generator=gen).to(dtype)
    out = {}
    for device in ("cpu", "cuda"):
        with run_on(device) as dev:
            xd, wd = x.to(dev).requires_grad_(), w.to(dev).requires_grad_()
            cams = hcam_ops.cam_gather(xd, wd, idx.to(dev))
            out[device] = (cams, *torch.autograd.grad(cams, [xd, wd], g.to(dev)))
    for a, b in zip(out["cuda"], out["cpu"]):
        assert_close(a.cpu(), b, dtype if dtype != torch.float64 else torch.float32, "cuda vs cpu")
