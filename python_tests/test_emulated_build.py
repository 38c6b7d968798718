"""The build for the CUDA emulator (HCAM_OPS_CUDA=emulate, docs/emulator.md):
how calls reach the emulated CUDA kernels, the CUDA policies they follow,
and that such a build takes no CUDA tensors; and that other builds refuse the
emulation switch."""

import pytest
import torch

import hcam_ops
from hcam_ops import _C
from hcam_ops.testing import emulated_cuda


def emulated_only(test):
    """A test of the emulated build, among the CUDA tests (`pytest -m cuda`, CI's emulated leg)."""
    test = pytest.mark.skipif(not hcam_ops.cuda_emulated(), reason="needs a build with HCAM_OPS_CUDA=emulate")(test)
    return pytest.mark.cuda(test)


@pytest.mark.skipif(hcam_ops.cuda_emulated(), reason="this build emulates CUDA")
def test_other_builds_refuse_the_emulation():
    with pytest.raises(RuntimeError, match="does not emulate CUDA"), emulated_cuda():
        pass
    with pytest.raises(RuntimeError, match="HCAM_OPS_CUDA=emulate"):
        _C.set_cuda_emulation(True)


@emulated_only
def test_the_switch_is_scoped_and_nests():
    assert hcam_ops.cuda_built()
    with emulated_cuda():
        with emulated_cuda():
            pass
        assert _C.set_cuda_emulation(True) is True  # still on after the inner block
    assert _C.set_cuda_emulation(False) is False  # off after the outer one


@emulated_only
def test_the_cuda_policies_follow_the_kernels():
    """An unchecked class index out of range: the CPU kernels' driver raises,
    the CUDA ones write NaN for that sample (CamPasses::checks_index_range),
    although the tensors are on the host both times."""
    x, w = torch.randn(2, 3, 4), torch.randn(5, 4)
    idx = torch.tensor([0, 9])
    with pytest.raises(RuntimeError, match=r"outside \[0, 5\)"):
        hcam_ops.cam_gather(x, w, idx, check_index=False)
    with emulated_cuda():
        cams = hcam_ops.cam_gather(x, w, idx, check_index=False)
    assert torch.isfinite(cams[0]).all() and torch.isnan(cams[1]).all()


@emulated_only
def test_cuda_tensors_are_refused():
    """The emulated kernels are host code: the CUDA dispatch key (reached here
    by a redispatch, there being no GPU) raises instead of reading device memory."""
    x, w, idx = torch.randn(2, 3, 4), torch.randn(5, 4), torch.zeros(2, 1, dtype=torch.int64)
    cuda = torch._C.DispatchKeySet(torch._C.DispatchKey.CUDA)
    with pytest.raises(RuntimeError, match="runs its CUDA kernels on the emulator"):
        torch.ops.hcam_ops.cam_gather.default.redispatch(cuda, x, w, idx)


@emulated_only
def test_the_device_is_an_h200():
    """The kernels' host code asks the device's limits (cudaDeviceGetAttribute):
    farthest_point_sample stages a point in the opt-in shared memory of an H200,
    227 KiB (the emulator does not count static shared memory, so all of it)."""
    with emulated_cuda():
        with pytest.raises(RuntimeError, match=r"at most 58112 channels of Float .*\(232448 bytes"):
            hcam_ops.farthest_point_sample(torch.randn(1, 4, 58113), 2)
        idx = hcam_ops.farthest_point_sample(torch.randn(1, 4, 58112), 2)  # past 48 KiB: opts in
    assert idx.shape == (1, 2)
