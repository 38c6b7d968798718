// cam_gather: class activation maps of chosen classes, docs/ops/cam.md#cam_gather.
#include "cam_gather.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/zeros_like.h>
#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include <tuple>

namespace hcam_ops {

at::Tensor cam_gather(const CamPasses* passes, const at::Tensor& features, const at::Tensor& weight,
                      const at::Tensor& index) {
  const char* op = "cam_gather";
  const c10::DeviceGuard guard(features.device());
  const auto v = view_features(features, op);
  const auto lv = levels_of_index(weight, index, v, features, op);
  auto cams = at::empty({v.B, lv.size(), v.N}, features.options().dtype(acc_type_of(features.scalar_type())));
  if (v.B > 0) {
    if (passes->checks_index_range) check_index_range(lv, v.B, op);
    passes->cam_pass(v, lv, cams);
  }
  return cams.to(features.scalar_type());
}

std::tuple<at::Tensor, at::Tensor> cam_gather_backward(const CamPasses* passes, const at::Tensor& grad,
                                                       const at::Tensor& features, const at::Tensor& weight,
                                                       const at::Tensor& index, std::array<bool, 2> output_mask) {
  const char* op = "cam_gather_backward";
  // Any CUDA argument brings the call to the CUDA kernel, so this catches a host grad too.
  check_same_device(grad, "grad", features, op);
  const c10::DeviceGuard guard(features.device());
  const auto v = view_features(features, op);
  const auto lv = levels_of_index(weight, index, v, features, op);
  TORCH_CHECK(grad.dim() == 3 && grad.size(0) == v.B && grad.size(1) == lv.size() && grad.size(2) == v.N, op,
              ": grad must be [B, L, N] = [", v.B, ", ", lv.size(), ", ", v.N, "], got ", grad.sizes());
  const auto [want_dx, want_dw] = output_mask;
  at::Tensor dx, dw;
  if (!want_dx && !want_dw) return {dx, dw};
  // Without want_dx the feature pass writes no d features (an undefined dx_rows).
  at::Tensor dx_rows;
  if (want_dx) std::tie(dx, dx_rows) = empty_features_grad(features, v);
  if (want_dw) dw = at::zeros_like(lv.weights[0]);
  if (v.B == 0) return {dx, dw};
  if (passes->checks_index_range) check_index_range(lv, v.B, op);
  const auto coef = grad.to(acc_type_of(features.scalar_type())).contiguous();
  const auto partial = passes->grad_pass(v, lv, coef, std::nullopt, dx_rows);
  if (want_dw) passes->class_reduce(partial, lv, 0, lv.size(), dw);
  return {dx, dw};
}

TORCH_LIBRARY_FRAGMENT(hcam_ops, m) {
  // features [B, N, C] or [B, C, H, W]; weight [K, C]; index [B, L] int64 -> [B, L, N]
  m.def("cam_gather(Tensor features, Tensor weight, Tensor index) -> Tensor");
  // output_mask: (d features, d weight); one not asked for comes back undefined (None).
  m.def(
      "cam_gather_backward(Tensor grad, Tensor features, Tensor weight, Tensor index, bool[2] output_mask)"
      " -> (Tensor, Tensor)");
}

}  // namespace hcam_ops
