// cam_gather: class activation maps of chosen classes, docs/ops/cam.md#cam_gather.
#include <torch/library.h>

#include "cam_features.h"

TORCH_LIBRARY_FRAGMENT(hcam_ops, m) {
  // features [B, N, C] or [B, C, H, W]; weight [K, C]; index [B, L] int64 -> [B, L, N]
  m.def("cam_gather(Tensor features, Tensor weight, Tensor index) -> Tensor");
  m.def(
      "cam_gather_backward(Tensor grad, Tensor features, Tensor weight, Tensor index)"
      " -> (Tensor, Tensor)");
}

// The kernels of the CPU's level (cpu/isa.h), chosen once at load time.
TORCH_LIBRARY_IMPL(hcam_ops, CPU, m) {
  HCAM_CPU_DISPATCH(hcam_ops::cpu::register_cam_gather_kernels)(m);
}
