"""hcam_ops.farthest_point_sample against the one-pick-at-a-time reference."""

import pytest
import torch
from conftest import DEVICES, DTYPES, cuda_only, run_on

import hcam_ops
from hcam_ops import reference as R


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 7, 3, 7), (3, 64, 33, 16), (2, 197, 384, 64)], ids=str)
@pytest.mark.parametrize("start", [0, "last"])
def test_parity(start, shape, dtype, device, gen):
    B, N, C, k = shape
    start = N - 1 if start == "last" else start
    pts = torch.randn(B, N, C, generator=gen, dtype=torch.float64).to(device, dtype)
    got = hcam_ops.farthest_point_sample(pts, k, start)
    want = R.farthest_point_sample(pts.cpu(), k, start)
    assert got.dtype == torch.int64 and got.shape == (B, k)
    assert torch.equal(got.cpu(), want)
    assert all(len(set(row)) == k for row in got.tolist())  # distinct while points remain


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_reduced_precision_matches_the_rule(dtype, gen):
    pts = torch.randn(2, 50, 8, generator=gen).to(dtype)
    assert torch.equal(hcam_ops.farthest_point_sample(pts, 10), R.farthest_point_sample(pts, 10))


def test_mask_and_exhaustion(gen):
    pts = torch.randn(2, 10, 4, generator=gen)
    mask = torch.zeros(2, 10, dtype=torch.bool)
    mask[0, 3:7] = True
    mask[1] = True
    idx = hcam_ops.farthest_point_sample(pts, 6, start=0, mask=mask)
    assert torch.equal(idx, R.farthest_point_sample(pts, 6, 0, mask))
    assert idx[0, 0] == 3  # masked start -> first valid point
    assert set(idx[0, :4].tolist()) == {3, 4, 5, 6} and (idx[0, 4:] == 3).all()  # then the lowest valid index


def test_ties_go_to_the_lower_index():
    pts = torch.tensor([[[0.0], [1.0], [-1.0], [1.0]]])  # 1 and 3 coincide, 1 and 2 tie from 0
    assert hcam_ops.farthest_point_sample(pts, 3).tolist() == [[0, 1, 2]]


def test_opcheck(gen):
    pts = torch.randn(2, 9, 3, generator=gen)
    torch.library.opcheck(torch.ops.hcam_ops.farthest_point_sample.default, (pts, 4, 1, None))
    torch.library.opcheck(
        torch.ops.hcam_ops.farthest_point_sample.default, (pts, 4, 0, torch.rand(2, 9, generator=gen) > 0.3)
    )


@pytest.mark.compile
def test_compile_fullgraph(gen):
    pts = torch.randn(2, 20, 5, generator=gen)

    def f(p):
        idx = hcam_ops.farthest_point_sample(p, 6)
        return torch.gather(p, 1, idx.unsqueeze(-1).expand(-1, -1, 5)).sum()

    torch.testing.assert_close(torch.compile(f, fullgraph=True)(pts), f(pts))


@pytest.mark.parametrize(
    "args, error, match",
    [
        ((torch.randn(2, 5), 2), ValueError, r"\[B, N, C\]"),
        ((torch.randn(2, 5, 3), 6), ValueError, "k must be in"),
        ((torch.randn(2, 5, 3), 0), ValueError, "k must be in"),
        ((torch.randn(2, 5, 3), 2, 5), IndexError, "start must be in"),
        ((torch.randn(2, 5, 3), 2, 0, torch.ones(2, 4, dtype=torch.bool)), ValueError, "mask must be"),
        ((torch.randint(0, 4, (2, 5, 3)), 2), TypeError, "float16"),
    ],
)
def test_bad_input(args, error, match):
    with pytest.raises(error, match=match):
        hcam_ops.farthest_point_sample(*args)


@cuda_only
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_cuda_matches_cpu(dtype, gen):
    pts = torch.randn(8, 197, 384, generator=gen, dtype=torch.float64).to(dtype)
    mask = torch.rand(8, 197, generator=gen) > 0.1
    a = hcam_ops.farthest_point_sample(pts, 64, 0, mask)
    with run_on("cuda") as dev:
        b = hcam_ops.farthest_point_sample(pts.to(dev), 64, 0, mask.to(dev))
    if dtype == torch.float64:
        assert torch.equal(a, b.cpu())
    else:  # float32 sums in another order may flip a near tie: most picks agree
        assert (a == b.cpu()).float().mean() > 0.9
