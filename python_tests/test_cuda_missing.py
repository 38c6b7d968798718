"""A build without CUDA kernels says so for every op (csrc/ops/common.h,
register_missing_cuda_kernels), instead of the dispatcher's generic error.

CI builds the CUDA kernels in both of its legs (nvcc, then the emulator), so
the condition is made where every build can: an hcam_ops operator that has no
CUDA kernel when hcam_ops._C loads. A fresh process defines such operators
before importing hcam_ops, and the library must give each the CUDA kernel
that raises, as it gives every operator of a build without CUDA."""

import os
import subprocess
import sys

import pytest
import torch

import hcam_ops

# The repository whose hcam_ops this process imported: the fresh process imports the same one.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(hcam_ops.__file__)))
MESSAGE = "this build of hcam_ops has no CUDA kernels"

# Two operators (one of them an overload) with a CPU kernel only, defined in
# the hcam_ops namespace before hcam_ops._C loads and registers its own.
PROBE = """
import torch

lib = torch.library.Library("hcam_ops", "FRAGMENT")
lib.define("missing_cuda_probe(Tensor x) -> Tensor")
lib.define("missing_cuda_probe.twice(Tensor x) -> Tensor")
lib.impl("missing_cuda_probe", lambda x: x + 1, "CPU")
lib.impl("missing_cuda_probe.twice", lambda x: x + 2, "CPU")

import hcam_ops  # noqa: E402

cuda = torch._C.DispatchKeySet(torch._C.DispatchKey.CUDA)
x = torch.zeros(3)
for name, op, cpu in (
    ("hcam_ops::missing_cuda_probe", torch.ops.hcam_ops.missing_cuda_probe.default, 1.0),
    ("hcam_ops::missing_cuda_probe.twice", torch.ops.hcam_ops.missing_cuda_probe.twice, 2.0),
):
    assert torch.equal(op(x), torch.full((3,), cpu)), name  # the CPU kernel is left alone
    assert torch._C._dispatch_has_kernel_for_dispatch_key(name, "CUDA"), name
    try:
        op.redispatch(cuda, x)
    except RuntimeError as e:
        print(str(e).splitlines()[0])
    else:
        print(name, "ran a CUDA kernel")
"""


def _cuda_registration(name):
    """Where the CUDA kernel of operator ``name`` was registered (the
    dispatcher's own record)."""
    lines = [line for line in torch._C._dispatch_dump(name).splitlines() if line.startswith("CUDA:")]
    assert len(lines) == 1, torch._C._dispatch_dump(name)
    return lines[0]


def test_an_op_without_a_cuda_kernel_gets_one_that_says_so():
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [f"hcam_ops::missing_cuda_probe: {MESSAGE}"] * 2


def test_every_op_has_a_cuda_kernel_the_builds_own_or_the_one_that_says_so():
    """A CUDA build (nvcc or the emulator) keeps its kernels; a build without
    CUDA gives every op the kernel that raises."""
    names = [n for n in torch._C._dispatch_get_all_op_names() if n.startswith("hcam_ops::")]
    assert "hcam_ops::cam_gather" in names and "hcam_ops::fgd_loss_backward" in names
    for name in names:
        assert torch._C._dispatch_has_kernel_for_dispatch_key(name, "CUDA"), name
        says_so = "csrc/ops/common.cpp" in _cuda_registration(name)
        assert says_so == (not hcam_ops.cuda_built()), (name, _cuda_registration(name))
    if not hcam_ops.cuda_built():
        # The CUDA kernel, called directly (no device here to make a CUDA tensor with).
        x, w, idx = torch.randn(2, 3, 4), torch.randn(5, 4), torch.zeros(2, 1, dtype=torch.int64)
        cuda = torch._C.DispatchKeySet(torch._C.DispatchKey.CUDA)
        with pytest.raises(RuntimeError, match=f"hcam_ops::cam_gather: {MESSAGE}"):
            torch.ops.hcam_ops.cam_gather.default.redispatch(cuda, x, w, idx)
