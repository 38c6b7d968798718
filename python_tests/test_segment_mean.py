"""hcam_ops.segment_mean against the scatter-add reference."""

import pytest
import torch
from conftest import DEVICES, DTYPES, assert_close, cuda_only, randn, run_on

import hcam_ops
from hcam_ops import reference as R

# (B, H, W, C, S): one pixel, C = 1, odd sizes, more segments than pixels
# (empty segments), a CAST-sized grid, C above one CUDA block's 512 channels.
SHAPES = [(1, 1, 1, 1, 1), (2, 5, 7, 3, 4), (3, 9, 11, 17, 120), (2, 28, 28, 64, 196), (1, 6, 6, 600, 5)]


def _segments(B, H, W, S, gen, dtype=torch.int64):
    return torch.randint(0, S, (B, H, W), generator=gen).to(dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64], ids=str)
def test_parity(index_dtype, shape, dtype, device, gen):
    B, H, W, C, S = shape
    x = randn(B, H, W, C, gen=gen, dtype=dtype, device=device, requires_grad=True)
    seg = _segments(B, H, W, S, gen, index_dtype).to(device)
    mean, counts = hcam_ops.segment_mean(x, seg, S)
    xd = x.detach().double().requires_grad_()
    want, want_counts = R.segment_mean(xd, seg, S)
    assert mean.dtype == dtype and counts.dtype == torch.int64
    assert torch.equal(counts.cpu(), want_counts.cpu())
    assert_close(mean, want, dtype, "mean")
    g = torch.randn(B, S, C, generator=gen, dtype=torch.float64)
    (dx,) = torch.autograd.grad(mean, x, g.to(device, dtype))
    (wx,) = torch.autograd.grad(want, xd, g.to(device))
    assert_close(dx, wx, dtype, "dx")


def test_non_contiguous_input(gen):
    x = torch.randn(2, 8, 6, 10, generator=gen, dtype=torch.float64).permute(0, 2, 1, 3).requires_grad_()
    seg = _segments(2, 6, 8, 7, gen)
    assert not x.is_contiguous()
    mean, _ = hcam_ops.segment_mean(x, seg, 7)
    want, _ = R.segment_mean(x, seg, 7)
    torch.testing.assert_close(mean, want)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("layout", ["expanded", "scalar", "transposed", "sliced"])
def test_strided_upstream_gradient(layout, dtype, device, gen):
    """The backward reads grad [B, S, C] through its strides (the CPU kernel
    does not copy it): every layout gives the contiguous grad's result, bit
    for bit, including an empty segment and a pixel of no segment."""
    B, H, W, C, S = 2, 5, 7, 19, 6
    x = randn(B, H, W, C, gen=gen, dtype=dtype, device=device)
    seg = _segments(B, H, W, S - 1, gen).to(device)  # segment S - 1 stays empty
    seg[0, 0, 0] = -1
    _, counts = hcam_ops.segment_mean(x, seg, S, check_segments=False)
    base = torch.randn(B, S, 2 * C, generator=gen).to(device, dtype)
    grad = {
        "expanded": base[:, :1, :1].expand(B, S, C),
        "scalar": base[0, 0, 0].expand(B, S, C),
        "transposed": base[:, :, :C].transpose(1, 2).contiguous().transpose(1, 2),
        "sliced": base[:, :, ::2][:, :, :C],
    }[layout]
    assert not grad.is_contiguous()
    op = torch.ops.hcam_ops.segment_mean_backward
    got = op(grad, x, seg, counts)
    want = op(grad.contiguous(), x, seg, counts)
    assert torch.equal(got, want)
    assert (got[0, 0, 0] == 0).all()


def test_empty_segments_are_zero_and_masked(gen):
    x = torch.randn(1, 4, 4, 3, generator=gen)
    seg = torch.zeros(1, 4, 4, dtype=torch.int64)
    seg[0, 2:] = 2
    mean, counts = hcam_ops.segment_mean(x, seg, 5)
    assert counts.tolist() == [[8, 0, 8, 0, 0]]
    assert (mean[0, [1, 3, 4]] == 0).all()


def test_gradcheck(gen):
    x = torch.randn(2, 3, 5, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    seg = _segments(2, 3, 5, 6, gen, torch.int32)
    assert torch.autograd.gradcheck(lambda x: hcam_ops.segment_mean(x, seg, 6)[0], (x,))


def test_opcheck(gen):
    x = torch.randn(2, 3, 5, 4, generator=gen, requires_grad=True)
    seg = _segments(2, 3, 5, 6, gen)
    torch.library.opcheck(torch.ops.hcam_ops.segment_mean.default, (x, seg, 6))
    _, counts = hcam_ops.segment_mean(x, seg, 6)
    torch.library.opcheck(
        torch.ops.hcam_ops.segment_mean_backward.default, (torch.randn(2, 6, 4), x.detach(), seg, counts)
    )


@pytest.mark.compile
def test_compile_fullgraph(gen):
    x = torch.randn(2, 4, 4, 8, generator=gen, requires_grad=True)
    seg = _segments(2, 4, 4, 5, gen)

    def f(x):
        mean, counts = hcam_ops.segment_mean(x, seg, 5)
        return (mean * (counts > 0).unsqueeze(-1)).square().sum()

    a, b = torch.compile(f, fullgraph=True)(x), f(x)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(torch.autograd.grad(a, x)[0], torch.autograd.grad(b, x)[0])


@pytest.mark.parametrize(
    "x, seg, S, error, match",
    [
        (torch.randn(2, 4, 4), torch.zeros(2, 4, 4, dtype=torch.long), 3, ValueError, r"\[B, H, W, C\]"),
        (torch.randn(2, 4, 4, 3), torch.zeros(2, 4, 5, dtype=torch.long), 3, ValueError, "segments must be"),
        (torch.randn(2, 4, 4, 3), torch.zeros(2, 4, 4), 3, TypeError, "int32 or int64"),
        (torch.randn(2, 4, 4, 3), torch.full((2, 4, 4), 3, dtype=torch.long), 3, IndexError, "id 3, outside"),
        (torch.randn(2, 4, 4, 3), torch.full((2, 4, 4), -1, dtype=torch.long), 3, IndexError, "id -1"),
        (
            torch.randn(2, 4, 4, 3),
            torch.zeros(2, 4, 4, dtype=torch.long),
            0,
            ValueError,
            "num_segments must be positive",
        ),
        (torch.randint(0, 3, (2, 4, 4, 3)), torch.zeros(2, 4, 4, dtype=torch.long), 3, TypeError, "float16"),
    ],
)
def test_bad_input(x, seg, S, error, match):
    with pytest.raises(error, match=match):
        hcam_ops.segment_mean(x, seg, S)


def test_unchecked_out_of_range_pixels_belong_to_no_segment(gen):
    x = torch.randn(1, 2, 3, 4, generator=gen, requires_grad=True)
    seg = torch.tensor([[[0, 1, -1], [7, 1, 0]]])
    mean, counts = hcam_ops.segment_mean(x, seg, 2, check_segments=False)
    assert counts.tolist() == [[2, 2]]
    mean.sum().backward()
    assert (x.grad[0, 0, 2] == 0).all() and (x.grad[0, 1, 0] == 0).all()


@cuda_only
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_cuda_matches_cpu(dtype, gen):
    x = torch.randn(4, 28, 28, 384, generator=gen).to(dtype)
    seg = _segments(4, 28, 28, 196, gen, torch.int32)
    g = torch.randn(4, 196, 384, generator=gen).to(dtype)
    out = {}
    for device in ("cpu", "cuda"):
        with run_on(device) as dev:
            xd = x.to(dev).requires_grad_()
            mean, counts = hcam_ops.segment_mean(xd, seg.to(dev), 196)
            out[device] = (mean, counts, torch.autograd.grad(mean, xd, g.to(dev))[0])
    assert torch.equal(out["cuda"][1].cpu(), out["cpu"][1])
    for i in (0, 2):
        assert_close(
            out["cuda"][i].cpu(), out["cpu"][i], dtype if dtype != torch.float64 else torch.float32, "cuda vs cpu"
        )
