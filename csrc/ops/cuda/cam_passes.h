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

int num_sms(int device);

// A 1-D grid size, checked against the launch limit.
int64_t checked_grid(int64_t blocks);

}  // namespace hcam_ops::cuda
