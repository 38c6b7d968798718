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
