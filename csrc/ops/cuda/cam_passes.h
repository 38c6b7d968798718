// CUDA passes over the features, shared by cam_gather and the fused CAM-KL op;
// the same contract as the CPU passes in ../cpu/cam_passes.h.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>

#include "../cam_features.h"

namespace hcam_ops::cuda {

void cam_pass(const FeatureView& v, const Levels& levels, const at::Tensor& cams);

at::Tensor grad_pass(const FeatureView& v, const Levels& levels, const at::Tensor& coef,
                     const std::optional<at::Tensor>& scale, const at::Tensor& dx_rows);

// Levels [l0, l1) must be one level, or levels sharing one [B, L] index (cam_gather).
void class_reduce(const at::Tensor& partial, const Levels& levels, int64_t l0, int64_t l1, const at::Tensor& dw);

// The three, as the drivers of cam_gather and cam_kl take them.
inline constexpr CamPasses kCamPasses{&cam_pass, &grad_pass, &class_reduce, /*checks_index_range=*/false};

}  // namespace hcam_ops::cuda
