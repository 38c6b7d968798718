"""Shared helpers of the hcam_ops tests: devices, tolerances, random inputs."""

import pytest
import torch

import hcam_ops

HAS_CUDA = torch.cuda.is_available() and hcam_ops.cuda_built()
NO_CUDA_REASON = (
    "no CUDA device here" if not torch.cuda.is_available() else "this build of hcam_ops has no CUDA kernels"
)
cuda_only = pytest.mark.skipif(not HAS_CUDA, reason=NO_CUDA_REASON)

DEVICES = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=cuda_only)]
DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]

# Relative tolerance of a kernel in `dtype` against the float64 reference on the
# same (rounded) inputs: the kernels accumulate in float32 (float64 for
# float64), so the bound is set by the output's rounding and, for float32, by
# float32 accumulation.
RTOL = {torch.float64: 1e-10, torch.float32: 3e-5, torch.float16: 6e-3, torch.bfloat16: 4e-2}


def assert_close(actual, expected, dtype, what=""):
    """Elementwise |a - e| <= rtol * |e| + rtol * max|e| + tiny: relative for
    large entries, scaled by the tensor's magnitude for entries near zero, and
    never finer than the smallest normal number of `dtype` (a float16 result
    cannot hold 1e-11)."""
    expected = expected.double()
    actual = actual.double()
    tol = RTOL[dtype]
    scale = expected.abs().max().item() if expected.numel() else 0.0
    torch.testing.assert_close(
        actual,
        expected,
        rtol=tol,
        atol=tol * scale + max(torch.finfo(dtype).tiny, 1e-12),
        equal_nan=True,
        msg=lambda m: f"{what}: {m}",
    )


def make_features(B, N, C, layout, dtype, device, gen, requires_grad=True):
    """Random features in one of the layouts the ops accept, with N = H*W for maps.

    tokens: [B, N, C] contiguous; tokens_t: [B, N, C] viewing a [B, C, N] buffer;
    map: [B, C, H, W] contiguous; map_cl: channels-last; strided: a
    non-contiguous slice (copied by the op).
    """
    H, W = _hw(N)
    if layout == "tokens":
        x = torch.randn(B, N, C, generator=gen, dtype=torch.float64)
    elif layout == "tokens_t":
        x = torch.randn(B, C, N, generator=gen, dtype=torch.float64).transpose(1, 2)
    elif layout == "map":
        x = torch.randn(B, C, H, W, generator=gen, dtype=torch.float64)
    elif layout == "map_cl":
        x = torch.randn(B, C, H, W, generator=gen, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    elif layout == "strided":
        x = torch.randn(B, N, 2 * C, generator=gen, dtype=torch.float64)[:, :, ::2]
    else:
        raise ValueError(layout)
    x = _to(x, dtype, device)
    return x.requires_grad_(requires_grad)


def _to(x, dtype, device):
    """Converts keeping the strides (a plain .to() on a view keeps them too,
    but channels-last and transposed views must survive the device copy)."""
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return x.to(device=device, dtype=dtype, memory_format=torch.channels_last)
    if x.dim() == 3 and not x.is_contiguous() and x.transpose(1, 2).is_contiguous():
        return x.transpose(1, 2).to(device=device, dtype=dtype).transpose(1, 2)
    if not x.is_contiguous():
        # keep the strided view: make the storage on the device, then slice
        base = x.as_strided((x.shape[0], x.shape[1], 2 * x.shape[2]), (x.shape[1] * 2 * x.shape[2], 2 * x.shape[2], 1))
        return base.to(device=device, dtype=dtype)[:, :, ::2]
    return x.to(device=device, dtype=dtype)


def _hw(N):
    for h in range(int(N**0.5), 0, -1):
        if N % h == 0:
            return h, N // h
    return 1, N


def randn(*shape, gen, dtype, device, requires_grad=False):
    return (
        torch.randn(*shape, generator=gen, dtype=torch.float64)
        .to(device=device, dtype=dtype)
        .requires_grad_(requires_grad)
    )


def randint(high, shape, gen, device):
    return torch.randint(0, high, shape, generator=gen).to(device)


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)
