// cam_kl: the fused hierarchical CAM-consistency loss, docs/ops/cam.md#hierarchical_cam_kl_loss.
#include "cam_kl.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/zeros_like.h>
#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include <tuple>

namespace hcam_ops {

std::tuple<at::Tensor, at::Tensor> cam_kl(const CamKlKernels* kernels, const at::Tensor& features,
                                          at::TensorList weights, at::TensorList indices, double temperature,
                                          double eps, c10::string_view direction) {
  const char* op = "cam_kl_loss";
  const bool f2c = parse_direction(direction, op);
  const c10::DeviceGuard guard(features.device());
  const auto v = view_features(features, op);
  const auto lv = levels_of_lists(weights, indices, v, features, op);
  const int64_t L = lv.size(), B = v.B, N = v.N;
  TORCH_CHECK(L >= 2 && L <= kMaxLevels + 1, op, ": needs 2 to ", kMaxLevels + 1, " levels, got ", L);
  static_assert(kMaxLevels + 1 <= kPassLevels, "cam_pass must read the features once for every level");
  auto kl = at::empty({B}, features.options());
  auto coef = at::empty({B, L - 1, N}, features.options().dtype(acc_type_of(features.scalar_type())));
  if (B == 0) return {kl, coef};
  if (kernels->passes->checks_index_range) check_index_range(lv, B, op);
  auto cams = at::empty({B, L, N}, coef.options());
  kernels->passes->cam_pass(v, lv, cams);
  kernels->kl_rows(cams, temperature, eps, f2c, kl, coef);
  return {kl, coef};
}

std::tuple<at::Tensor, std::vector<at::Tensor>> cam_kl_backward(const CamKlKernels* kernels, const at::Tensor& grad_kl,
                                                                const at::Tensor& features, at::TensorList weights,
                                                                at::TensorList indices, const at::Tensor& coef,
                                                                std::array<bool, 2> output_mask) {
  const char* op = "cam_kl_loss_backward";
  // Any CUDA argument brings the call to the CUDA kernel, so this catches host tensors too.
  check_same_device(grad_kl, "grad", features, op);
  check_same_device(coef, "coef", features, op);
  const c10::DeviceGuard guard(features.device());
  const auto v = view_features(features, op);
  const auto lv = levels_of_lists(weights, indices, v, features, op);
  const int64_t L = lv.size();
  TORCH_CHECK(coef.dim() == 3 && coef.size(0) == v.B && coef.size(1) == L - 1 && coef.size(2) == v.N, op,
              ": coef must be [B, L-1, N]");
  TORCH_CHECK(grad_kl.dim() == 1 && grad_kl.size(0) == v.B, op, ": grad must be [B]");
  const auto [want_dx, want_dws] = output_mask;
  at::Tensor dx;
  std::vector<at::Tensor> dws;
  if (!want_dx && !want_dws) return {dx, dws};
  // Without want_dx the feature pass writes no d features (an undefined dx_rows).
  at::Tensor dx_rows;
  if (want_dx) std::tie(dx, dx_rows) = empty_features_grad(features, v);
  if (want_dws) {
    for (int64_t l = 0; l + 1 < L; ++l) dws.push_back(at::zeros_like(lv.weights[l]));
  }
  if (v.B == 0) return {dx, dws};
  if (kernels->passes->checks_index_range) check_index_range(lv, v.B, op);
  const auto partial =
      kernels->passes->grad_pass(v, lv, coef.contiguous(), grad_kl.to(features.scalar_type()).contiguous(), dx_rows);
  for (size_t l = 0; l < dws.size(); ++l) kernels->passes->class_reduce(partial, lv, l, l + 1, dws[l]);
  return {dx, dws};
}

TORCH_LIBRARY_FRAGMENT(hcam_ops, m) {
  // Levels fine to coarse (2 to 5). Returns the per-sample KL summed over
  // adjacent pairs [B] and the backward's coefficients d KL / d CAM of every
  // level but the coarsest [B, L-1, N] (accumulation dtype).
  m.def(
      "cam_kl(Tensor features, Tensor[] weights, Tensor[] indices, float temperature,"
      " float eps, str direction) -> (Tensor, Tensor)");
  // Gradients of features and of weights[0 .. L-2]; the coarsest level is the
  // detached teacher and gets none. output_mask: (d features, d weights); one
  // not asked for comes back undefined (None), or as an empty list.
  m.def(
      "cam_kl_backward(Tensor grad, Tensor features, Tensor[] weights, Tensor[] indices,"
      " Tensor coef, bool[2] output_mask) -> (Tensor, Tensor[])");
}

}  // namespace hcam_ops
