// minmax_normalize: (x - min) / (max - min + eps) over the last dim, docs/ops/cam.md#minmax_normalize.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(hcam_ops, m) {
  m.def("minmax_normalize(Tensor x, float eps) -> Tensor");
  m.def("minmax_normalize_backward(Tensor grad, Tensor x, float eps) -> Tensor");
}
