"""Every CPU op gives bitwise the same outputs and gradients at 1, 2 and 3
threads (docs/README.md, "Determinism"): each kernel splits its work into
tasks that do not depend on the thread count, and partial results are
combined in a fixed order. The shapes are large enough that every
parallel_for has more tasks than threads, and the split passes (CAM weight
gradient, FGD statistics tiles) have several splits per sample."""

import pytest
import torch
from conftest import randn

import hcam_ops

THREADS = (1, 2, 3)
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]


def _at(threads, fn):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return fn()
    finally:
        torch.set_num_threads(before)


def _run(op, inputs, grad_of):
    """op(**clones of inputs): its outputs (a tensor, a tuple or a dict) and
    the gradients of a random weighting of them w.r.t. inputs[grad_of]."""
    xs = {k: (v.detach().clone().requires_grad_(k in grad_of) if torch.is_tensor(v) else v) for k, v in inputs.items()}
    out = op(**xs)
    outs = list(out.values()) if isinstance(out, dict) else list(out) if isinstance(out, tuple) else [out]
    outs = [o for o in outs if o.is_floating_point()]
    if not grad_of:
        return outs, []
    gen = torch.Generator().manual_seed(11)
    total = sum((o.float() * (torch.rand(o.shape, generator=gen) + 0.5)).sum() for o in outs if o.requires_grad)
    grads = torch.autograd.grad(total, [xs[k] for k in grad_of])
    return [o.detach() for o in outs], list(grads)


def _assert_invariant(op, inputs, grad_of=()):
    runs = {t: _at(t, lambda: _run(op, inputs, grad_of)) for t in THREADS}
    base_out, base_grad = runs[THREADS[0]]
    assert base_out, "no floating-point output to compare"
    for t in THREADS[1:]:
        out, grad = runs[t]
        for i, (a, b) in enumerate(zip(base_out, out)):
            assert torch.equal(a, b), f"output {i} differs between 1 and {t} threads"
        for name, a, b in zip(grad_of, base_grad, grad):
            assert torch.equal(a, b), f"gradient of {name} differs between 1 and {t} threads"


def _gen():
    return torch.Generator().manual_seed(0)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["tokens", "tokens_t", "map"])
def test_cam_kl(dtype, layout):
    g = _gen()
    B, C, H, W = 6, 70, 15, 20  # N = 300: five 64-row splits per sample in the weight gradient
    if layout == "map":
        x = randn(B, C, H, W, gen=g, dtype=dtype, device="cpu")
    elif layout == "tokens":
        x = randn(B, H * W, C, gen=g, dtype=dtype, device="cpu")
    else:  # a transposed [B, C, N] buffer seen as [B, N, C]
        x = randn(B, C, H * W, gen=g, dtype=dtype, device="cpu").transpose(1, 2)
    weights = [randn(k, C, gen=g, dtype=dtype, device="cpu") for k in (13, 5, 3)]
    # Repeated classes: the weight gradient sums several samples per class.
    index = [torch.randint(0, w.shape[0], (B,), generator=g) for w in weights]

    def op(features, w0, w1, w2):
        return hcam_ops.hierarchical_cam_kl_loss(features, [w0, w1, w2], index, temperature=0.7)

    _assert_invariant(op, dict(features=x, w0=weights[0], w1=weights[1], w2=weights[2]), ("features", "w0", "w1"))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_cam_gather(dtype):
    g = _gen()
    x = randn(5, 257, 33, gen=g, dtype=dtype, device="cpu")
    w = randn(9, 33, gen=g, dtype=dtype, device="cpu")
    idx = torch.randint(0, 9, (5, 3), generator=g)

    def op(features, weight):
        return hcam_ops.cam_gather(features, weight, idx)

    _assert_invariant(op, dict(features=x, weight=w), ("features", "weight"))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
# (B, D, K, chunk): at::mm products in chunks; one chunk of 4.9M
# multiply-adds (oneDNN's float32 product, bfloat16's gradient products);
# chunks of 512 classes, 4.2M each (oneDNN) and a last one of 76 (at::mm).
@pytest.mark.parametrize("shape", [(37, 50, 300, 128), (64, 128, 600, None), (64, 128, 1100, 512)], ids=str)
def test_multilabel_arcface(dtype, shape):
    g = _gen()
    B, D, K, chunk = shape
    labels = torch.rand(B, K, generator=g) < 0.1

    def op(features, weight):
        return hcam_ops.multilabel_arcface_loss(features, weight, labels, return_logits=True, chunk_size=chunk)

    inputs = dict(
        features=randn(B, D, gen=g, dtype=dtype, device="cpu"), weight=randn(K, D, gen=g, dtype=dtype, device="cpu")
    )
    _assert_invariant(op, inputs, ("features", "weight"))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("mode", ["fgd", "distillbev"])
def test_fgd_loss(dtype, mode):
    g = _gen()
    B, C, H, W = 3, 20, 37, 41  # 1517 positions: several statistics tiles, a ragged last one
    fg = torch.rand(B, H, W, generator=g) * (torch.rand(B, H, W, generator=g) < 0.4)
    bg = (fg == 0).float() / (fg == 0).float().sum((1, 2), keepdim=True)
    kw = dict(fg_weight=0.7, bg_weight=0.4, attention_weight=0.3, channel_weight=0.9, spatial_weight=1.3)
    if mode == "distillbev":
        hit = (torch.rand(B, H, W, generator=g) < 0.3) & (fg == 0)
        kw.update(fp_mask=hit.float() / hit.float().sum((1, 2), keepdim=True), fp_weight=0.6)
        kw.update(spatial_attention="student_mix", channel_mask=True)

    def op(student, teacher):
        return hcam_ops.fgd_loss(student, teacher, fg, bg, **kw)

    inputs = dict(
        student=randn(B, C, H, W, gen=g, dtype=dtype, device="cpu"),
        teacher=randn(B, C, H, W, gen=g, dtype=dtype, device="cpu"),
    )
    _assert_invariant(op, inputs, ("student",))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_segment_mean(dtype):
    g = _gen()
    x = randn(3, 17, 19, 70, gen=g, dtype=dtype, device="cpu")
    seg = torch.randint(0, 23, (3, 17, 19), generator=g)

    def op(x):
        return hcam_ops.segment_mean(x, seg, 23)

    _assert_invariant(op, dict(x=x), ("x",))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_minmax_normalize_and_softmax_kl(dtype):
    g = _gen()
    p, q = randn(300, 77, gen=g, dtype=dtype, device="cpu"), randn(300, 77, gen=g, dtype=dtype, device="cpu")
    _assert_invariant(lambda x: hcam_ops.minmax_normalize(x), dict(x=p), ("x",))
    _assert_invariant(lambda p, q: hcam_ops.softmax_kl(p, q, 0.8), dict(p=p, q=q), ("p", "q"))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_farthest_point_sample(dtype):
    pts = randn(5, 300, 3, gen=_gen(), dtype=dtype, device="cpu")

    def op(points):
        idx = hcam_ops.farthest_point_sample(points, 40)
        return points.gather(1, idx.unsqueeze(-1).expand(-1, -1, 3))

    _assert_invariant(op, dict(points=pts))


def test_box_masks():
    g = _gen()
    boxes = [torch.rand(7, 4, generator=g) * 200 for _ in range(4)]
    boxes = [torch.cat([b[:, :2], b[:, :2] + b[:, 2:] / 2], 1) for b in boxes]
    _assert_invariant(lambda: hcam_ops.fgd_masks_from_boxes(boxes, (256, 256), (61, 67)), {})
    bev = [
        torch.cat(
            [
                torch.rand(9, 2, generator=g) * 40 - 20,
                torch.rand(9, 2, generator=g) * 6 + 0.5,
                torch.rand(9, 1, generator=g) * 6 - 3,
            ],
            1,
        )
        for _ in range(4)
    ]
    _assert_invariant(lambda: hcam_ops.bev_masks_from_boxes(bev, (-25.6, -25.6), 0.8, (64, 64)), {})


def test_kernels_are_built_with_openmp():
    """The parallel loops are OpenMP regions of our own objects: without
    -fopenmp they compile to serial loops (every kernel on one thread, as
    before issue 23), and the library imports no GOMP_parallel."""
    import shutil
    import subprocess
    import sys

    if not sys.platform.startswith("linux") or "OpenMP" not in torch.__config__.parallel_info():
        pytest.skip("-fopenmp is set for torch's OpenMP builds on Linux")
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm (binutils) is not installed")
    symbols = subprocess.run([nm, "-D", "--undefined-only", hcam_ops._C.__file__], capture_output=True, text=True)
    assert "GOMP_parallel" in symbols.stdout
