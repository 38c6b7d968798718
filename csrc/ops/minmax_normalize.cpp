// minmax_normalize: (x - min) / (max - min + eps) over the last dim, docs/ops/cam.md#minmax_normalize.
#include "minmax_normalize.h"

#include <ATen/ops/empty_like.h>
#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include "cam_features.h"

namespace hcam_ops {

at::Tensor minmax_normalize(const MinmaxNormalizeKernels* kernels, const at::Tensor& x, double eps) {
  check_rows(x, "minmax_normalize");
  const c10::DeviceGuard guard(x.device());
  const auto xc = x.contiguous();
  auto out = at::empty_like(xc);
  if (xc.numel() > 0) kernels->forward(xc, eps, out);
  return out;
}

at::Tensor minmax_normalize_backward(const MinmaxNormalizeKernels* kernels, const at::Tensor& grad, const at::Tensor& x,
                                     double eps) {
  check_same_rows(x, grad, "minmax_normalize_backward");
  const c10::DeviceGuard guard(x.device());
  const auto xc = x.contiguous(), gc = grad.contiguous();
  auto gx = at::empty_like(xc);
  if (xc.numel() > 0) kernels->backward(gc, xc, eps, gx);
  return gx;
}

TORCH_LIBRARY_FRAGMENT(hcam_ops, m) {
  m.def("minmax_normalize(Tensor x, float eps) -> Tensor");
  m.def("minmax_normalize_backward(Tensor grad, Tensor x, float eps) -> Tensor");
}

}  // namespace hcam_ops
