"""Shared helpers of the hcam_ops tests: devices, tolerances, random inputs.

The "cuda" device of the tests runs hcam_ops's CUDA kernels: on a GPU, or in
a build made with HCAM_OPS_CUDA=emulate on the emulator (docs/emulator.md),
where a "cuda" test's tensors are CPU tensors and its hcam_ops calls run the
emulated CUDA kernels (hcam_ops.testing.emulated_cuda, entered for the whole
test by the fixture below, or by run_on for one part of a test).
"""

import contextlib

import pytest
import torch

import hcam_ops
from hcam_ops.testing import emulated_cuda

EMULATED = hcam_ops.cuda_emulated()
HAS_CUDA = EMULATED or (torch.cuda.is_available() and hcam_ops.cuda_built())
NO_CUDA_REASON = (
    "no CUDA device here" if not torch.cuda.is_available() else "this build of hcam_ops has no CUDA kernels"
)
# Tests of what only a real device shows: a CUDA tensor beside a CPU one.
REAL_CUDA = torch.cuda.is_available() and hcam_ops.cuda_built() and not EMULATED
NO_REAL_CUDA_REASON = (
    "needs CUDA tensors: the emulated build runs the CUDA kernels on CPU tensors, so there is no second device"
    if EMULATED
    else NO_CUDA_REASON
)
# The marks of every test of the CUDA kernels (`pytest -m cuda` selects them).
CUDA_MARKS = [pytest.mark.cuda, pytest.mark.skipif(not HAS_CUDA, reason=NO_CUDA_REASON)]
REAL_CUDA_MARKS = [pytest.mark.cuda, pytest.mark.skipif(not REAL_CUDA, reason=NO_REAL_CUDA_REASON)]


def cuda_only(test):
    """Decorator: a test of the CUDA kernels (on a GPU or on the emulator)."""
    for mark in CUDA_MARKS:
        test = mark(test)
    return test


def real_cuda_only(test):
    """Decorator: a test that needs CUDA tensors (a GPU and a CUDA build)."""
    for mark in REAL_CUDA_MARKS:
        test = mark(test)
    return test


# A test's `device`: the torch device of its tensors. On the emulator, the
# "cuda" case has CPU tensors and the emulated_cuda mark.
CUDA_TENSORS = "cpu" if EMULATED else "cuda"
DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param(CUDA_TENSORS, id="cuda", marks=[*CUDA_MARKS, pytest.mark.emulated_cuda] if EMULATED else CUDA_MARKS),
]


@pytest.fixture(autouse=True)
def _torch_threads_restored():
    """Every test leaves torch's thread count as it found it: a benchmark
    script run in-process once set it to 1 for the rest of the session, and a
    later test comparing its in-process run with a fresh subprocess (at the
    default count) saw the last bits of torch's reductions differ."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _emulated_cuda_test(request):
    """A "cuda" test of the emulated build runs its hcam_ops calls on the emulated CUDA kernels."""
    if request.node.get_closest_marker("emulated_cuda") is None:
        yield
        return
    with emulated_cuda():
        yield


@contextlib.contextmanager
def run_on(device):
    """For a test that runs both devices in turn: yields the torch device of
    the tensors of a run on `device` ("cpu" or "cuda"), and on the emulator
    runs the block's hcam_ops calls (forward and backward) on the emulated
    CUDA kernels."""
    if device == "cuda" and EMULATED:
        with emulated_cuda():
            yield "cpu"
    else:
        yield device


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
