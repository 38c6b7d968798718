"""hcam_ops: fused C++/CUDA losses for hierarchical and fine-grained recognition.

Importing the package loads the compiled library (hcam_ops._C), which registers
the operators under torch.ops.hcam_ops; the functions below are their Python
face, with autograd and fake (meta) implementations for torch.compile.
"""

import torch  # noqa: F401  (loads libc10/libtorch before the extension)

from . import _torch_check  # noqa: E402

_torch_check.check()  # the torch _C was built against, before _C is loaded

from . import (  # noqa: E402
    _C,  # noqa: F401  (registers torch.ops.hcam_ops.*)
    distill,
    nn,
    ops,
    reference,
)

# The ops: hcam_ops.ops's list (its __all__) is the one list of them.
from .ops import *  # noqa: E402, F403

__all__ = [*ops.__all__, "distill", "nn", "reference"]


def cpu_capability() -> str:
    """The instruction set the CPU kernels run at: "DEFAULT" (baseline x86-64),
    "AVX2" or "AVX512"; the highest this build, the CPU and the environment
    (ATEN_CPU_CAPABILITY, HCAM_OPS_CPU_CAPABILITY) allow, fixed at import."""
    return _C.cpu_capability()


def cuda_built() -> bool:
    """Whether this build holds the CUDA kernels."""
    return _C.cuda_built()


def cuda_emulated() -> bool:
    """Whether this build's CUDA kernels run on the emulator (built with
    HCAM_OPS_CUDA=emulate, for tests without a GPU): hcam_ops.testing.emulated_cuda()
    runs them on CPU tensors. Such a build takes no CUDA tensors."""
    return _C.cuda_emulated()


def __getattr__(name):
    # hcam_ops.models needs timm (and registers its models there): imported on
    # first use, so the ops work where timm is not installed.
    if name in ("models", "train", "superpixels", "testing"):
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'hcam_ops' has no attribute {name!r}")
