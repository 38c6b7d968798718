"""hcam_ops.cam_kl_loss / hierarchical_cam_kl_loss against hcam_ops.reference."""

import pytest
import torch
from conftest import DEVICES, DTYPES, assert_close, cuda_only, make_features, randint, randn, run_on

import hcam_ops
from hcam_ops import reference as R

# (B, N, C, Kf, Kc): N = 1, B = 1, K = 1, odd C, C not a multiple of 4 or 8,
# C a multiple of 8 (16-byte packs on CUDA), a large N.
SHAPES = [
    (1, 1, 5, 1, 1),
    (2, 7, 3, 4, 2),
    (1, 16, 2, 3, 2),
    (3, 30, 13, 5, 3),
    (4, 49, 24, 10, 4),
    (2, 3136, 16, 7, 3),
]
LAYOUTS = ["tokens", "tokens_t", "map", "map_cl", "strided"]


def _inputs(B, N, C, Kf, Kc, layout, dtype, device, gen):
    x = make_features(B, N, C, layout, dtype, device, gen)
    wf = randn(Kf, C, gen=gen, dtype=dtype, device=device, requires_grad=True)
    wc = randn(Kc, C, gen=gen, dtype=dtype, device=device, requires_grad=True)
    fi = randint(Kf, (B,), gen, device)
    ci = randint(Kc, (B,), gen, device)
    return x, wf, wc, fi, ci


def _reference(x, wf, wc, fi, ci, **kw):
    """The reference in float64 on the same (rounded) inputs, with its gradients."""
    xd = x.detach().double().requires_grad_()
    wfd = wf.detach().double().requires_grad_()
    wcd = wc.detach().double().requires_grad_()
    loss = R.cam_kl_loss(xd, wfd, wcd, fi, ci, **kw)
    return loss, xd, wfd, wcd


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_parity_forward_backward(shape, layout, dtype, device, gen):
    x, wf, wc, fi, ci = _inputs(*shape, layout, dtype, device, gen)
    loss = hcam_ops.cam_kl_loss(x, wf, wc, fi, ci)
    ref, xd, wfd, wcd = _reference(x, wf, wc, fi, ci)
    assert loss.dtype == dtype and loss.shape == ()
    assert_close(loss, ref, dtype, "loss")
    gx, gwf = torch.autograd.grad(loss, [x, wf])
    rx, rwf = torch.autograd.grad(ref, [xd, wfd])
    assert gx.shape == x.shape and gx.stride() == _expected_grad_stride(x)
    assert_close(gx, rx, dtype, "d features")
    assert_close(gwf, rwf, dtype, "d fine_weight")


def _expected_grad_stride(x):
    """The gradient keeps the input's strides where the kernel read it in place."""
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.empty_like(x, memory_format=torch.channels_last).stride()
    if x.dim() == 3 and not x.is_contiguous() and x.transpose(1, 2).is_contiguous():
        return x.stride()
    return torch.empty(x.shape).stride()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("direction", ["fine_to_coarse", "coarse_to_fine"])
@pytest.mark.parametrize("temperature", [0.25, 1.0, 3.0])
@pytest.mark.parametrize("reduction", ["batchmean", "sum", "none"])
def test_parity_options(direction, temperature, reduction, device, gen):
    x, wf, wc, fi, ci = _inputs(5, 37, 11, 6, 3, "tokens", torch.float64, device, gen)
    kw = dict(temperature=temperature, direction=direction, reduction=reduction, eps=1e-4)
    loss = hcam_ops.cam_kl_loss(x, wf, wc, fi, ci, **kw)
    ref, xd, wfd, _ = _reference(x, wf, wc, fi, ci, **kw)
    assert loss.shape == ref.shape
    assert_close(loss, ref, torch.float64, "loss")
    g = torch.rand(loss.shape, generator=gen, dtype=torch.float64).to(device)
    gx, gwf = torch.autograd.grad(loss, [x, wf], g)
    rx, rwf = torch.autograd.grad(ref, [xd, wfd], g)
    assert_close(gx, rx, torch.float64, "d features")
    assert_close(gwf, rwf, torch.float64, "d fine_weight")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", ["tokens", "map"])
def test_single_channel(layout, device, gen):
    """C = 1: min-max removes the weight's scale, so its true gradient is ~0 and
    only float64 resolves it against the reference."""
    x, wf, wc, fi, ci = _inputs(3, 16, 1, 3, 2, layout, torch.float64, device, gen)
    loss = hcam_ops.cam_kl_loss(x, wf, wc, fi, ci)
    ref, xd, wfd, _ = _reference(x, wf, wc, fi, ci)
    assert_close(loss, ref, torch.float64, "loss")
    for a, b in zip(torch.autograd.grad(loss, [x, wf]), torch.autograd.grad(ref, [xd, wfd])):
        assert_close(a, b, torch.float64, "grad")


def test_coarse_branch_gets_no_gradient(gen):
    x, wf, wc, fi, ci = _inputs(3, 20, 6, 4, 3, "tokens", torch.float64, "cpu", gen)
    loss = hcam_ops.cam_kl_loss(x, wf, wc, fi, ci)
    loss.backward()
    assert wc.grad is None
    assert wf.grad is not None and x.grad is not None


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("levels", [2, 3, 5])
@pytest.mark.parametrize("layout", ["tokens", "map"])
def test_hierarchical_parity(levels, layout, device, gen):
    B, N, C = 4, 25, 9
    x = make_features(B, N, C, layout, torch.float64, device, gen)
    Ks = [9, 6, 4, 3, 2][:levels]
    ws = [randn(K, C, gen=gen, dtype=torch.float64, device=device, requires_grad=True) for K in Ks]
    idx = [randint(K, (B,), gen, device) for K in Ks]
    loss = hcam_ops.hierarchical_cam_kl_loss(x, ws, idx, temperature=0.5)
    ref = R.hierarchical_cam_kl_loss(x, ws, idx, temperature=0.5)
    assert_close(loss, ref, torch.float64, "loss")
    got = torch.autograd.grad(loss, [x, *ws[:-1]])
    want = torch.autograd.grad(ref, [x, *ws[:-1]])
    for l, (a, b) in enumerate(zip(got, want)):
        assert_close(a, b, torch.float64, f"grad {l}")


def test_one_weight_at_every_level_sums_its_gradients(gen):
    """The same head at two levels: autograd adds the per-level gradients."""
    x, w, _, fi, ci = _inputs(3, 16, 5, 4, 2, "tokens", torch.float64, "cpu", gen)
    mid = randn(3, 5, gen=gen, dtype=torch.float64, device="cpu")
    idx = [fi, randint(3, (3,), gen, "cpu"), ci]
    loss = hcam_ops.hierarchical_cam_kl_loss(x, [w, mid, w[:2]], idx)
    ref = R.hierarchical_cam_kl_loss(x, [w, mid, w[:2]], idx)
    assert_close(torch.autograd.grad(loss, w)[0], torch.autograd.grad(ref, w)[0], torch.float64, "d w")


def _teacher_blind_inputs(gen, B=3, N=8, C_free=5, C_fixed=2, Kf=4, Kc=3, layout="tokens"):
    """Inputs for gradcheck. The loss stops the coarse CAM's gradient, which a
    finite difference cannot see; so the perturbed channels are ones the
    coarse head does not read (its weight is zero there and random on the
    fixed channels): the teacher is then a real, non-constant map that the
    perturbation leaves alone, and gradcheck tests the true derivative."""
    dt = torch.float64
    x_free = torch.randn(B, N, C_free, generator=gen, dtype=dt, requires_grad=True)
    x_fixed = torch.randn(B, N, C_fixed, generator=gen, dtype=dt)
    wf = torch.randn(Kf, C_free + C_fixed, generator=gen, dtype=dt, requires_grad=True)
    wc = torch.cat([torch.zeros(Kc, C_free, dtype=dt), torch.randn(Kc, C_fixed, generator=gen, dtype=dt)], 1)
    fi = torch.randint(0, Kf, (B,), generator=gen)
    ci = torch.randint(0, Kc, (B,), generator=gen)

    def features(xf):
        x = torch.cat([xf, x_fixed], -1)
        if layout == "map":
            return x.transpose(1, 2).reshape(B, -1, 2, N // 2)
        return x

    return x_free, wf, wc, fi, ci, features


@pytest.mark.parametrize("direction", ["fine_to_coarse", "coarse_to_fine"])
@pytest.mark.parametrize("layout", ["tokens", "map"])
def test_gradcheck(direction, layout, gen):
    x_free, wf, wc, fi, ci, features = _teacher_blind_inputs(gen, layout=layout)
    assert torch.autograd.gradcheck(
        lambda xf, w: hcam_ops.cam_kl_loss(
            features(xf), w, wc, fi, ci, temperature=0.7, direction=direction, reduction="none"
        ),
        (x_free, wf),
    )


def test_opcheck(gen):
    x, wf, wc, fi, ci = _inputs(3, 12, 7, 4, 3, "tokens", torch.float32, "cpu", gen)
    torch.library.opcheck(torch.ops.hcam_ops.cam_kl.default, (x, [wf, wc], [fi, ci], 1.0, 1e-6, "fine_to_coarse"))
    xm = make_features(2, 12, 7, "map_cl", torch.float32, "cpu", gen)
    torch.library.opcheck(
        torch.ops.hcam_ops.cam_kl.default,
        (xm, [wf, wc, wc], [fi[:2], ci[:2], ci[:2]], 0.5, 1e-6, "coarse_to_fine"),
    )
    kl, coef = torch.ops.hcam_ops.cam_kl(x.detach(), [wf.detach(), wc.detach()], [fi, ci], 1.0, 1e-6, "fine_to_coarse")
    for output_mask in ([True, True], [True, False], [False, True]):
        torch.library.opcheck(
            torch.ops.hcam_ops.cam_kl_backward.default,
            (torch.rand(3, generator=gen), x.detach(), [wf.detach(), wc.detach()], [fi, ci], coef, output_mask),
        )


@pytest.mark.compile
@pytest.mark.parametrize("device", DEVICES)
def test_compile_fullgraph(device, gen):
    x, wf, wc, fi, ci = _inputs(4, 20, 8, 5, 3, "map", torch.float32, device, gen)

    def step(x, wf, wc, fi, ci):
        return hcam_ops.cam_kl_loss(x, wf, wc, fi, ci, temperature=0.5) * 0.1

    compiled = torch.compile(step, fullgraph=True)
    loss = compiled(x, wf, wc, fi, ci)
    eager = step(x, wf, wc, fi, ci)
    torch.testing.assert_close(loss, eager)
    g_compiled = torch.autograd.grad(loss, [x, wf])
    g_eager = torch.autograd.grad(eager, [x, wf])
    for a, b in zip(g_compiled, g_eager):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("device", DEVICES)
def test_deterministic(device, gen):
    """Many samples share each class: the weight gradient is a sum over them,
    done in a fixed order, so two runs agree bit for bit."""
    x, wf, wc, _, _ = _inputs(64, 49, 32, 3, 2, "tokens", torch.float32, device, gen)
    fi = randint(3, (64,), gen, device)
    ci = randint(2, (64,), gen, device)
    runs = []
    for _ in range(2):
        loss = hcam_ops.cam_kl_loss(x, wf, wc, fi, ci)
        runs.append((loss, *torch.autograd.grad(loss, [x, wf])))
    for a, b in zip(*runs):
        assert torch.equal(a, b)


@cuda_only
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_cuda_matches_cpu(dtype, layout, gen):
    x, wf, wc, fi, ci = _inputs(6, 196, 40, 12, 5, layout, dtype, "cpu", gen)
    out = {}
    for device in ("cpu", "cuda"):
        with run_on(device) as dev:
            xd = x.detach().to(dev).requires_grad_()
            wfd = wf.detach().to(dev).requires_grad_()
            loss = hcam_ops.cam_kl_loss(xd, wfd, wc.detach().to(dev), fi.to(dev), ci.to(dev), reduction="none")
            out[device] = (loss, *torch.autograd.grad(loss.sum(), [xd, wfd]))
    for a, b in zip(out["cuda"], out["cpu"]):
        assert_close(a.cpu(), b, dtype if dtype != torch.float64 else torch.float32, "cuda vs cpu")
