"""hcam_ops.multilabel_arcface_loss against hcam_ops.reference."""

import math

import pytest
import torch
from conftest import DEVICES, DTYPES, assert_close, cuda_only, randn, run_on

import hcam_ops
from hcam_ops import reference as R
from hcam_ops.nn import MultiLabelArcFaceLoss

# (B, D, K, chunk_size): K = 1, odd D, K not a multiple of the chunk, one chunk.
SHAPES = [(1, 3, 1, None), (4, 7, 5, None), (6, 16, 300, 128), (3, 33, 257, 64), (8, 64, 40, 40)]


def _labels(B, K, gen, kind="float", p=0.3):
    y = torch.rand(B, K, generator=gen) < p
    return y if kind == "bool" else y.double()


def _run(f, w, y, **kw):
    return hcam_ops.multilabel_arcface_loss(f, w, y, **kw)


def _check_parity(f, w, y, dtype, g_seed=0, **kw):
    loss = _run(f, w, y, **kw)
    fd, wd = f.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    kw_ref = {k: v for k, v in kw.items() if k != "chunk_size"}
    ref = R.multilabel_arcface_loss(fd, wd, y.to(fd.device), **kw_ref)
    assert loss.shape == ref.shape and loss.dtype == f.dtype
    assert_close(loss, ref, dtype, "loss")
    g = torch.rand(ref.shape, generator=torch.Generator().manual_seed(g_seed), dtype=torch.float64)
    got = torch.autograd.grad(loss, [f, w], g.to(f.device, f.dtype))
    want = torch.autograd.grad(ref, [fd, wd], g.to(f.device))
    assert_close(got[0], want[0], dtype, "d features")
    assert_close(got[1], want[1], dtype, "d weight")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("easy_margin", [False, True])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_parity(reduction, easy_margin, shape, dtype, device, gen):
    B, D, K, chunk = shape
    f = randn(B, D, gen=gen, dtype=dtype, device=device, requires_grad=True)
    w = randn(K, D, gen=gen, dtype=dtype, device=device, requires_grad=True)
    y = _labels(B, K, gen).to(device, dtype)
    _check_parity(f, w, y, dtype, easy_margin=easy_margin, reduction=reduction, chunk_size=chunk)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_bfloat16_cpu_at_least_as_exact_as_the_reference(reduction, gen):
    """bfloat16 on CPU: the cosines come from a float32 product and, where
    oneDNN has bfloat16 products, the two gradient products run in bfloat16.
    Loss and gradients stay at least as close to float64 as the reference
    computed in bfloat16 (which rounds the cosines too). The shape has
    products of more than 4M multiply-adds, where the CPU takes those paths."""
    B, D, K = 48, 128, 700
    f = torch.randn(B, D, generator=gen).bfloat16()
    w = torch.randn(K, D, generator=gen).bfloat16()
    y = torch.rand(B, K, generator=gen) < 0.05
    up = torch.rand(B, K, generator=gen) if reduction == "none" else torch.tensor(1.0)

    def run(fn, dtype):
        fx, wx = f.to(dtype).requires_grad_(), w.to(dtype).requires_grad_()
        loss = fn(fx, wx, y, reduction=reduction)
        loss.backward(up.to(dtype))
        return [t.detach().double() for t in (loss, fx.grad, wx.grad)]

    exact = run(R.multilabel_arcface_loss, torch.float64)
    fused = run(hcam_ops.multilabel_arcface_loss, torch.bfloat16)
    ref = run(R.multilabel_arcface_loss, torch.bfloat16)
    for name, e, a, b in zip(("loss", "d features", "d weight"), exact, fused, ref):
        err_fused = ((a - e).norm() / e.norm()).item()
        err_ref = ((b - e).norm() / e.norm()).item()
        assert err_fused <= 1.1 * err_ref + 1e-4, f"{name}: fused {err_fused:.2e}, bf16 reference {err_ref:.2e}"


@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("K, chunk", [(600, None), (1100, 512)], ids=["one_chunk", "chunks"])
def test_parity_large_products_cpu(K, chunk, reduction, gen):
    """Products of at least 4M multiply-adds: on CPU they go to oneDNN's
    float32 product (where torch has it), the result taken as the chunk's
    cosines, P and the weight gradient (one chunk: 4.9M) or added / copied per
    chunk (chunks of 512 classes: 4.2M; the last, of 76, through at::mm)."""
    B, D = 64, 128
    f = randn(B, D, gen=gen, dtype=torch.float32, device="cpu", requires_grad=True)
    w = randn(K, D, gen=gen, dtype=torch.float32, device="cpu", requires_grad=True)
    y = _labels(B, K, gen, p=0.05).float()
    _check_parity(f, w, y, torch.float32, reduction=reduction, chunk_size=chunk)


@pytest.mark.parametrize("scale, margin", [(1.0, 0.1), (16.0, 0.3), (30.0, 0.5), (64.0, 1.2)])
def test_scales_and_margins(scale, margin, gen):
    f = torch.randn(5, 12, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(9, 12, generator=gen, dtype=torch.float64, requires_grad=True)
    _check_parity(f, w, _labels(5, 9, gen), torch.float64, scale=scale, margin=margin, chunk_size=4)


def _published_multilabel_arcface(features, weight, labels, s, m, easy_margin):
    """The published head's forward, transcribed (ArcFace's ArcMarginProduct as
    the Plant Pathology authors' MultiLabelArcFace applies it to multi-hot
    labels, then BCE with logits): cos_m, sin_m, th = cos(pi - m),
    mm = sin(pi - m) * m, for any m."""
    cos_m, sin_m = math.cos(m), math.sin(m)
    th, mm = math.cos(math.pi - m), math.sin(math.pi - m) * m
    cosine = torch.nn.functional.linear(torch.nn.functional.normalize(features), torch.nn.functional.normalize(weight))
    sine = torch.sqrt((1.0 - torch.pow(cosine, 2)).clamp(0, 1))
    phi = cosine * cos_m - sine * sin_m
    if easy_margin:
        phi = torch.where(cosine > 0, phi, cosine)
    else:
        phi = torch.where(cosine > th, phi, cosine - mm)
    output = (labels * phi + (1.0 - labels) * cosine) * s
    return torch.nn.functional.binary_cross_entropy_with_logits(output, labels)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("easy_margin", [False, True])
@pytest.mark.parametrize("margin", [0.0, math.pi / 2 - 1e-3, math.pi / 2 + 1e-3, 2.5], ids=lambda m: f"m={m:.4f}")
def test_margins_over_zero_to_pi_as_published(margin, easy_margin, device, gen):
    """The published head takes any margin: m = 0 (plain scaled-cosine BCE)
    and past pi/2 (both sides of it here) give its loss and gradients."""
    f = randn(6, 16, gen=gen, dtype=torch.float64, device=device, requires_grad=True)
    w = randn(11, 16, gen=gen, dtype=torch.float64, device=device, requires_grad=True)
    y = _labels(6, 11, gen).to(device)
    loss = _run(f, w, y, scale=16.0, margin=margin, easy_margin=easy_margin, chunk_size=4)
    want = _published_multilabel_arcface(f, w, y, 16.0, margin, easy_margin)
    torch.testing.assert_close(loss, want, rtol=1e-12, atol=0)
    got = torch.autograd.grad(loss, [f, w])
    exp = torch.autograd.grad(want, [f, w])
    for a, b in zip(got, exp):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-14)
    if margin == 0.0:  # plain BCE on the scaled cosines
        plain = torch.nn.functional.binary_cross_entropy_with_logits(16.0 * R.arcface_logits(f, w, 1.0), y)
        torch.testing.assert_close(loss, plain, rtol=1e-12, atol=0)


@pytest.mark.parametrize("fill", [0.0, 1.0])
def test_all_zero_and_all_one_rows_and_bool_labels(fill, gen):
    f = torch.randn(4, 10, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 10, generator=gen, dtype=torch.float64, requires_grad=True)
    y = _labels(4, 6, gen)
    y[1] = fill
    _check_parity(f, w, y, torch.float64)
    _check_parity(f, w, y.bool(), torch.float64, reduction="none")


def test_large_k_on_cpu(gen):
    """K = 100000 at small B, in several chunks (the default chunking keeps K
    whole here, so the chunk is set). A gradient sums 1e5 terms and then
    cancels in the projection, so float32 cannot meet a fixed tolerance: the
    yardstick is PyTorch's own float32 computation of the reference."""
    f = torch.randn(2, 16, generator=gen, requires_grad=True)
    w = torch.randn(100000, 16, generator=gen, requires_grad=True)
    y = torch.rand(2, 100000, generator=gen) < 0.01
    fd, wd = f.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    ref = R.multilabel_arcface_loss(fd, wd, y)
    ref32 = R.multilabel_arcface_loss(f, w, y)
    ours = _run(f, w, y, chunk_size=30000)
    assert abs(ours.item() - ref.item()) <= 1e-6 * ref.item()
    want = torch.autograd.grad(ref, [fd, wd])
    for got, torch32 in zip(torch.autograd.grad(ours, [f, w]), torch.autograd.grad(ref32, [f, w])):
        err = lambda g, r: ((g.double() - r).norm() / r.norm()).item()  # noqa: E731
        i = 0 if got.shape == f.shape else 1
        assert err(got, want[i]) <= 2 * err(torch32, want[i]) + 1e-6


def test_logits(gen):
    f = torch.randn(3, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 8, generator=gen, dtype=torch.float64)
    y = _labels(3, 5, gen)
    loss, logits = _run(f, w, y, return_logits=True, chunk_size=2)
    ref_loss, ref_logits = R.multilabel_arcface_loss(f, w, y, return_logits=True)
    assert_close(logits, ref_logits, torch.float64, "training logits")
    assert not logits.requires_grad
    inference = hcam_ops.arcface_logits(f, w)
    assert_close(inference, R.arcface_logits(f, w), torch.float64, "inference logits")
    # The inference scores carry no margin: where a label is 0 they equal the training logits.
    neg = y == 0
    assert_close(inference.detach()[neg], ref_logits.detach()[neg], torch.float64, "negatives")


def test_zero_norm_feature_row(gen):
    """A zero feature row: cos = 0 everywhere (F.normalize's definition), and
    the gradient of the same formula."""
    f = torch.randn(3, 6, generator=gen, dtype=torch.float64)
    f[1] = 0
    f.requires_grad_()
    w = torch.randn(4, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    y = _labels(3, 4, gen)
    loss, logits = _run(f, w, y, return_logits=True, reduction="none")
    assert torch.all(torch.isfinite(loss))
    expected_row = torch.where(y[1] == 1, 30.0 * (-math.sin(0.5)), torch.zeros(4, dtype=torch.float64))
    assert_close(logits[1], expected_row, torch.float64, "zero row logits")
    _check_parity(f, w, y, torch.float64)


@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("easy_margin", [False, True])
def test_gradcheck(reduction, easy_margin, gen):
    f = torch.randn(3, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    y = _labels(3, 4, gen, p=0.5)
    assert torch.autograd.gradcheck(
        lambda f, w: _run(f, w, y, scale=4.0, easy_margin=easy_margin, reduction=reduction, chunk_size=3), (f, w)
    )


def test_opcheck(gen):
    f = torch.randn(3, 5, generator=gen, requires_grad=True)
    w = torch.randn(7, 5, generator=gen, requires_grad=True)
    y = _labels(3, 7, gen).float()
    for reduction, grad_mask, logits in [
        ("mean", [True, True], False),
        ("sum", [False, False], True),
        ("none", [True, True], True),
        ("mean", [False, True], False),
        ("sum", [True, False], True),
    ]:
        torch.library.opcheck(
            torch.ops.hcam_ops.multilabel_arcface.default,
            (f, w, y, 30.0, 0.5, False, reduction, grad_mask, logits, 3),
        )
    for output_mask in ([True, True], [True, False], [False, True]):
        torch.library.opcheck(
            torch.ops.hcam_ops.multilabel_arcface_backward.default,
            (torch.rand(3, 7), f.detach(), w.detach(), y, 30.0, 0.5, True, 0, output_mask),
        )


@pytest.mark.compile
def test_compile_fullgraph(gen):
    head = MultiLabelArcFaceLoss(8, 6)
    f = torch.randn(4, 8, generator=gen, requires_grad=True)
    y = _labels(4, 6, gen).float()

    def step(f, y):
        loss, logits = head(f, y)
        return loss * 2.0, logits

    compiled = torch.compile(step, fullgraph=True)
    (loss, logits), (eager, eager_logits) = compiled(f, y), step(f, y)
    torch.testing.assert_close(loss, eager)
    torch.testing.assert_close(logits, eager_logits)
    a = torch.autograd.grad(loss, [f, head.weight])
    b = torch.autograd.grad(eager, [f, head.weight])
    for x, z in zip(a, b):
        torch.testing.assert_close(x, z)


def test_module(gen):
    torch.manual_seed(0)
    head = MultiLabelArcFaceLoss(10, 4, scale=16.0, margin=0.3).double()
    assert head.weight.shape == (4, 10)
    f = torch.randn(5, 10, generator=gen, dtype=torch.float64, requires_grad=True)
    y = _labels(5, 4, gen)
    loss, logits = head(f, y)
    ref_loss, ref_logits = R.multilabel_arcface_loss(f, head.weight, y, 16.0, 0.3, return_logits=True)
    assert_close(loss, ref_loss, torch.float64, "module loss")
    assert_close(head.logits(f), R.arcface_logits(f, head.weight, 16.0), torch.float64, "module logits")
    loss.backward()
    assert head.weight.grad is not None and f.grad is not None


def test_no_grad_forward(gen):
    f = torch.randn(3, 5, generator=gen)
    w = torch.randn(4, 5, generator=gen)
    y = _labels(3, 4, gen).float()
    with torch.no_grad():
        loss = _run(f, w, y)
    assert_close(loss, R.multilabel_arcface_loss(f.double(), w.double(), y), torch.float32, "no-grad loss")


def test_empty_batch():
    f = torch.zeros(0, 5, requires_grad=True)
    w = torch.randn(4, 5, requires_grad=True)
    loss = _run(f, w, torch.zeros(0, 4))
    loss.backward()
    assert loss.item() == 0.0 and torch.all(w.grad == 0)


@pytest.mark.parametrize(
    "change, error, match",
    [
        (lambda a: {**a, "y": a["y"][:, :3]}, ValueError, r"labels must be \[B, K\]"),
        (lambda a: {**a, "y": a["y"] * 2}, ValueError, "every value 0 or 1"),
        (lambda a: {**a, "y": a["y"].long()}, TypeError, "bool or float"),
        (lambda a: {**a, "w": a["w"][:, :4]}, ValueError, "D = 5, weight has 4"),
        (lambda a: {**a, "w": a["w"].long()}, TypeError, "weight must be float"),
        (lambda a: {**a, "f": a["f"][0]}, ValueError, r"\[B, D\]"),
        (lambda a: {**a, "kw": {"margin": -0.1}}, ValueError, r"margin must be in \[0, pi\)"),
        (lambda a: {**a, "kw": {"margin": 3.1416}}, ValueError, r"margin must be in \[0, pi\)"),
        (lambda a: {**a, "kw": {"scale": -1.0}}, ValueError, "scale must be positive"),
        (lambda a: {**a, "kw": {"reduction": "batchmean"}}, ValueError, "reduction must be one of"),
        (lambda a: {**a, "f": torch.where(torch.arange(5) == 2, float("nan"), a["f"])}, ValueError, "NaN or Inf"),
        (lambda a: {**a, "w": torch.where(torch.arange(5) == 0, float("inf"), a["w"])}, ValueError, "NaN or Inf"),
        (lambda a: {**a, "w": a["w"].to("meta")}, ValueError, "is on meta"),
    ],
)
def test_bad_input(change, error, match, gen):
    a = change(
        {
            "f": torch.randn(3, 5, generator=gen),
            "w": torch.randn(4, 5, generator=gen),
            "y": _labels(3, 4, gen).float(),
            "kw": {},
        }
    )
    with pytest.raises(error, match=match):
        _run(a["f"], a["w"], a["y"], **a["kw"])


def test_unchecked_nan_propagates(gen):
    f = torch.randn(3, 5, generator=gen)
    f[1, 2] = float("nan")
    loss = _run(f, torch.randn(4, 5, generator=gen), _labels(3, 4, gen).float(), reduction="none", check_inputs=False)
    assert torch.isnan(loss[1]).all() and torch.isfinite(loss[[0, 2]]).all()


@cuda_only
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_cuda_matches_cpu(reduction, dtype, gen):
    f = torch.randn(16, 96, generator=gen).to(dtype)
    w = torch.randn(1000, 96, generator=gen).to(dtype)
    y = _labels(16, 1000, gen, "bool", p=0.05)
    out = {}
    for device in ("cpu", "cuda"):
        with run_on(device) as dev:
            fd, wd = f.to(dev).requires_grad_(), w.to(dev).requires_grad_()
            loss = _run(fd, wd, y.to(dev), reduction=reduction, chunk_size=384)
            out[device] = (loss, *torch.autograd.grad(loss.sum(), [fd, wd]))
    for a, b in zip(out["cuda"], out["cpu"]):
        assert_close(a.cpu(), b, dtype if dtype != torch.float64 else torch.float32, "cuda vs cpu")
