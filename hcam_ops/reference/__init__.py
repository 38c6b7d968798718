"""Plain-PyTorch versions of every hcam_ops op, with the same signatures: the
contract the fused kernels are tested against, and the benchmarks' baseline.

The op list is hcam_ops.ops's (its __all__): the reference of an op is the
function of the same name in the module of the same name here
(hcam_ops.ops.cam_kl.cam_kl_loss -> hcam_ops.reference.cam_kl.cam_kl_loss);
importing this package fails for an op that has none."""

import importlib

from .. import ops as _ops


def _reference_of(name: str):
    module = getattr(_ops, name).__module__.rpartition(".")[2]
    return getattr(importlib.import_module(f".{module}", __name__), name)


globals().update({name: _reference_of(name) for name in _ops.__all__})
__all__ = list(_ops.__all__)
