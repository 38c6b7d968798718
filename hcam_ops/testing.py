"""Running hcam_ops's CUDA kernels where there is no GPU, for tests.

A build made with ``HCAM_OPS_CUDA=emulate`` (``hcam_ops.cuda_emulated()``)
holds the CUDA kernels compiled as host code on the emulator
(``docs/emulator.md``). Inside :func:`emulated_cuda`, this thread's hcam_ops
calls on CPU tensors run those kernels instead of the CPU ones: the Python
checks, autograd and ``torch.compile`` are the same, only the kernels differ,
and the drivers follow the CUDA policies (an unchecked class index gives NaN,
float16 ArcFace runs in float16).
"""

import contextlib
from collections.abc import Iterator

from . import _C


@contextlib.contextmanager
def emulated_cuda() -> Iterator[None]:
    """Runs this thread's hcam_ops calls on CPU tensors on the emulated CUDA
    kernels until the block ends (nested blocks restore what they found).
    A build that does not emulate CUDA raises ``RuntimeError``."""
    previous = _C.set_cuda_emulation(True)
    try:
        yield
    finally:
        _C.set_cuda_emulation(previous)


# The L2 model's default: an H100's or H200's 50 MB L2 (docs/traffic.md).
L2_BYTES = 50 * 1024 * 1024


def traffic_traced() -> bool:
    """Whether this build's emulated kernels report their memory accesses:
    an emulated build whose kernels clang compiled with load/store tracing
    (``docs/traffic.md``)."""
    return bool(_C.traffic_traced())


@contextlib.contextmanager
def traffic(l2_bytes: int = L2_BYTES) -> Iterator[list]:
    """Counts the memory traffic of every emulated kernel launch in the block
    (``docs/traffic.md``); yields a list that holds, when the block ends, one
    dict per launch, in order:

    - ``kernel``, ``grid``, ``block``;
    - ``requests``, ``requested_bytes``, ``sectors``: dicts by access kind
      (``load``, ``store``, ``atomic``) of the warp-level requests, the bytes
      the threads asked for, and the 32-byte sectors those requests touched
      (summed per request: the L1/L2 traffic);
    - ``unique_sectors_read``, ``unique_sectors_written``: distinct sectors
      (DRAM traffic if the L2 kept everything);
    - ``dram_read_bytes``, ``dram_write_bytes``: the L2 model's (``l2_bytes``,
      128-byte lines, LRU over the launch in block order);
    - ``buffers``: the same per tensor the kernel touched (``base`` is the
      allocation's address, ``bytes`` its size).

    Only tensors allocated inside the block count as global memory: make the
    inputs inside it. Run the ops inside :func:`emulated_cuda` too. A build
    without tracing raises ``RuntimeError``."""
    if not _C.cuda_emulated():
        raise RuntimeError("traffic counters need an emulated build (HCAM_OPS_CUDA=emulate, docs/traffic.md)")
    if not traffic_traced():
        raise RuntimeError(
            "this emulated build was compiled without load/store tracing (no clang++ found at build time): "
            "install clang and rebuild with HCAM_OPS_CUDA=emulate (docs/traffic.md)"
        )
    launches: list = []
    _C.traffic_begin(int(l2_bytes))
    try:
        yield launches
    finally:
        launches.extend(_C.traffic_end())
