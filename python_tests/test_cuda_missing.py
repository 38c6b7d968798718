"""A build without CUDA kernels says so for every op (csrc/ops/common.h,
register_missing_cuda_kernels), instead of the dispatcher's generic error."""

import pytest
import torch

import hcam_ops


@pytest.mark.skipif(hcam_ops.cuda_built(), reason="this build holds the CUDA kernels")
def test_every_op_of_a_cpu_only_build_says_it_has_no_cuda_kernels():
    names = [n for n in torch._C._dispatch_get_all_op_names() if n.startswith("hcam_ops::")]
    assert "hcam_ops::cam_gather" in names and "hcam_ops::fgd_loss_backward" in names
    for name in names:
        assert torch._C._dispatch_has_kernel_for_dispatch_key(name, "CUDA"), name
    # The CUDA kernel, called directly (no device here to make a CUDA tensor with).
    x, w, idx = torch.randn(2, 3, 4), torch.randn(5, 4), torch.zeros(2, 1, dtype=torch.int64)
    cuda = torch._C.DispatchKeySet(torch._C.DispatchKey.CUDA)
    with pytest.raises(RuntimeError, match="hcam_ops::cam_gather: this build of hcam_ops has no CUDA kernels"):
        torch.ops.hcam_ops.cam_gather.default.redispatch(cuda, x, w, idx)
