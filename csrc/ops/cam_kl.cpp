// cam_kl: the fused hierarchical CAM-consistency loss, docs/ops/cam.md#hierarchical_cam_kl_loss.
#include <torch/library.h>

#include "cam_features.h"

TORCH_LIBRARY_FRAGMENT(hcam_ops, m) {
  // Levels fine to coarse (2 to 5). Returns the per-sample KL summed over
  // adjacent pairs [B] and the backward's coefficients d KL / d CAM of every
  // level but the coarsest [B, L-1, N] (accumulation dtype).
  m.def(
      "cam_kl_forward(Tensor features, Tensor[] weights, Tensor[] indices, float temperature,"
      " float eps, str direction) -> (Tensor, Tensor)");
  // Gradients of features and of weights[0 .. L-2]; the coarsest level is the
  // detached teacher and gets none.
  m.def(
      "cam_kl_backward(Tensor grad, Tensor features, Tensor[] weights, Tensor[] indices,"
      " Tensor coef) -> (Tensor, Tensor[])");
}

// The kernels of the CPU's level (cpu/isa.h), chosen once at load time.
TORCH_LIBRARY_IMPL(hcam_ops, CPU, m) {
  HCAM_CPU_DISPATCH(hcam_ops::cpu::register_cam_kl_kernels)(m);
}
