"""hcam_ops.minmax_normalize against hcam_ops.reference.minmax_normalize."""

import pytest
import torch
from conftest import DEVICES, DTYPES, assert_close, cuda_only, randn, run_on

import hcam_ops
from hcam_ops import reference as R


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(1,), (5,), (3, 1), (4, 7), (2, 3, 33), (2, 3136)], ids=str)
def test_parity(shape, dtype, device, gen):
    x = randn(*shape, gen=gen, dtype=dtype, device=device, requires_grad=True)
    y = hcam_ops.minmax_normalize(x, eps=1e-4)
    xd = x.detach().double().requires_grad_()
    ref = R.minmax_normalize(xd, eps=1e-4)
    assert_close(y, ref, dtype, "out")
    g = torch.randn(shape, generator=gen, dtype=torch.float64)
    assert_close(
        torch.autograd.grad(y, x, g.to(device, dtype))[0], torch.autograd.grad(ref, xd, g.to(device))[0], dtype, "grad"
    )


def test_ties_send_gradient_to_first_position():
    x = torch.tensor([[1.0, 3.0, 1.0, 3.0, 2.0]], dtype=torch.float64, requires_grad=True)
    xr = x.detach().clone().requires_grad_()
    g = torch.tensor([[0.3, -1.0, 2.0, 0.5, 1.5]], dtype=torch.float64)
    got = torch.autograd.grad(hcam_ops.minmax_normalize(x), x, g)[0]
    want = torch.autograd.grad(R.minmax_normalize(xr), xr, g)[0]
    assert_close(got, want, torch.float64, "ties")


def test_constant_row_and_nan():
    c = torch.full((2, 4), 3.0, dtype=torch.float64)
    assert torch.all(hcam_ops.minmax_normalize(c) == 0)
    x = torch.tensor([[1.0, float("nan"), 2.0], [1.0, 0.0, 2.0]], dtype=torch.float64)
    y = hcam_ops.minmax_normalize(x)
    assert torch.isnan(y[0]).all() and torch.isfinite(y[1]).all()


def test_gradcheck_and_opcheck(gen):
    x = torch.randn(3, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: hcam_ops.minmax_normalize(x, 1e-3), (x,))
    torch.library.opcheck(torch.ops.hcam_ops.minmax_normalize.default, (x, 1e-6))
    torch.library.opcheck(
        torch.ops.hcam_ops.minmax_normalize_backward.default, (torch.randn(3, 7, dtype=torch.float64), x.detach(), 1e-6)
    )


def test_errors():
    with pytest.raises(ValueError, match="non-empty last dimension"):
        hcam_ops.minmax_normalize(torch.zeros(3, 0))
    with pytest.raises(TypeError, match="float16"):
        hcam_ops.minmax_normalize(torch.arange(4))
    with pytest.raises(ValueError, match="eps"):
        hcam_ops.minmax_normalize(torch.randn(4), eps=-1)


@cuda_only
def test_cuda_matches_cpu(gen):
    x = torch.randn(37, 300, generator=gen)
    g = torch.randn(37, 300, generator=gen)
    out = {}
    for d in ("cpu", "cuda"):
        with run_on(d) as dev:
            xd = x.to(dev).requires_grad_()
            y = hcam_ops.minmax_normalize(xd)
            out[d] = (y, torch.autograd.grad(y, xd, g.to(dev))[0])
    for a, b in zip(out["cuda"], out["cpu"]):
        assert_close(a.cpu(), b, torch.float32, "cuda vs cpu")
