// cam_gather: class activation maps of chosen classes, docs/ops/cam.md#cam_gather.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(hcam_ops, m) {
  // features [B, N, C] or [B, C, H, W]; weight [K, C]; index [B, L] int64 -> [B, L, N]
  m.def("cam_gather(Tensor features, Tensor weight, Tensor index) -> Tensor");
  m.def(
      "cam_gather_backward(Tensor grad, Tensor features, Tensor weight, Tensor index)"
      " -> (Tensor, Tensor)");
}
