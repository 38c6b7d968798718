// The entry points of a device's feature passes (cam_passes.h): the dtype
// dispatch both devices share.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>

#include <optional>

#include "cam_passes.h"

namespace hcam_ops {

// A device's passes as the drivers take them, from its passes for one dtype,
// Impl::cam_pass<scalar_t>, Impl::grad_pass<scalar_t> and
// Impl::class_reduce<scalar_t> (cpu/cam_passes_kernel.cpp,
// cuda/cam_passes_kernel.cu): each entry point picks the one for the
// features' dtype (the weight gradient's for class_reduce).
template <typename Impl>
struct CamPassEntries {
  static void cam_pass(const FeatureView& v, const Levels& levels, const at::Tensor& cams) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, v.data.scalar_type(), "cam_pass",
                                    [&] { Impl::template cam_pass<scalar_t>(v, levels, cams); });
  }

  static at::Tensor grad_pass(const FeatureView& v, const Levels& levels, const at::Tensor& coef,
                              const std::optional<at::Tensor>& scale, const at::Tensor& dx_rows) {
    at::Tensor partial;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, v.data.scalar_type(), "grad_pass", [&] {
      partial = Impl::template grad_pass<scalar_t>(v, levels, coef, scale, dx_rows);
    });
    return partial;
  }

  static void class_reduce(const at::Tensor& partial, const Levels& levels, int64_t l0, int64_t l1,
                           const at::Tensor& dw) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dw.scalar_type(), "class_reduce",
                                    [&] { Impl::template class_reduce<scalar_t>(partial, levels, l0, l1, dw); });
  }

  static constexpr CamPasses table(bool checks_index_range) {
    return {&cam_pass, &grad_pass, &class_reduce, checks_index_range};
  }
};

}  // namespace hcam_ops
