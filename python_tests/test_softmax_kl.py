"""hcam_ops.softmax_kl against hcam_ops.reference.softmax_kl and F.kl_div."""

import pytest
import torch
import torch.nn.functional as F
from conftest import DEVICES, DTYPES, assert_close, cuda_only, randn, run_on

import hcam_ops
from hcam_ops import reference as R


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(1,), (6,), (1, 1), (4, 9), (2, 3, 50), (3, 3136)], ids=str)
@pytest.mark.parametrize("direction", ["fine_to_coarse", "coarse_to_fine"])
@pytest.mark.parametrize("reduction", ["batchmean", "sum", "none"])
def test_parity(reduction, direction, shape, dtype, device, gen):
    p = randn(*shape, gen=gen, dtype=dtype, device=device, requires_grad=True)
    q = randn(*shape, gen=gen, dtype=dtype, device=device, requires_grad=True)
    out = hcam_ops.softmax_kl(p, q, 0.7, direction, reduction)
    pd, qd = (t.detach().double().requires_grad_() for t in (p, q))
    ref = R.softmax_kl(pd, qd, 0.7, direction, reduction)
    assert out.shape == ref.shape
    assert_close(out, ref, dtype, "kl")
    g = torch.rand(ref.shape, generator=gen, dtype=torch.float64)
    got = torch.autograd.grad(out, [p, q], g.to(device, dtype))
    want = torch.autograd.grad(ref, [pd, qd], g.to(device))
    for a, b in zip(got, want):
        assert_close(a, b, dtype, "grad")


def test_coarse_to_fine_is_kl_div(gen):
    p = torch.randn(5, 8, generator=gen, dtype=torch.float64)
    q = torch.randn(5, 8, generator=gen, dtype=torch.float64)
    want = F.kl_div(F.log_softmax(p, -1), F.softmax(q, -1), reduction="batchmean")
    assert_close(hcam_ops.softmax_kl(p, q, direction="coarse_to_fine"), want, torch.float64, "kl_div")


@pytest.mark.parametrize("direction", ["fine_to_coarse", "coarse_to_fine"])
def test_gradcheck_and_opcheck(direction, gen):
    p = torch.randn(3, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    q = torch.randn(3, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p, q: hcam_ops.softmax_kl(p, q, 0.5, direction, "none"), (p, q))
    torch.library.opcheck(torch.ops.hcam_ops.softmax_kl.default, (p, q, 0.5, direction))
    torch.library.opcheck(
        torch.ops.hcam_ops.softmax_kl_backward.default,
        (torch.rand(3, dtype=torch.float64), p.detach(), q.detach(), 0.5, direction),
    )


def test_errors():
    p = torch.randn(3, 5)
    with pytest.raises(ValueError, match="differ in shape"):
        hcam_ops.softmax_kl(p, torch.randn(3, 4))
    with pytest.raises(TypeError, match="must be float"):
        hcam_ops.softmax_kl(p, p.long())
    with pytest.raises(ValueError, match="temperature"):
        hcam_ops.softmax_kl(p, p, temperature=-1)
    with pytest.raises(ValueError, match="direction"):
        hcam_ops.softmax_kl(p, p, direction="both")
    with pytest.raises(ValueError, match="non-empty last dimension"):
        hcam_ops.softmax_kl(torch.zeros(2, 0), torch.zeros(2, 0))
    with pytest.raises(RuntimeError, match="differ in shape"):
        torch.ops.hcam_ops.softmax_kl(p, torch.randn(3, 4), 1.0, "fine_to_coarse")


def test_empty_batch():
    p = torch.zeros(0, 5, requires_grad=True)
    assert hcam_ops.softmax_kl(p, torch.zeros(0, 5)).item() == 0.0
    assert hcam_ops.softmax_kl(p, torch.zeros(0, 5), reduction="none").shape == (0,)


@cuda_only
def test_cuda_matches_cpu(gen):
    p = torch.randn(41, 500, generator=gen)
    q = torch.randn(41, 500, generator=gen)
    out = {}
    for d in ("cpu", "cuda"):
        with run_on(d) as dev:
            pd, qd = p.to(dev).requires_grad_(), q.to(dev).requires_grad_()
            kl = hcam_ops.softmax_kl(pd, qd, 0.5, reduction="none")
            out[d] = (kl, *torch.autograd.grad(kl.sum(), [pd, qd]))
    for a, b in zip(out["cuda"], out["cpu"]):
        assert_close(a.cpu(), b, torch.float32, "cuda vs cpu")
