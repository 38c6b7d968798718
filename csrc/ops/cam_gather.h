// cam_gather: the device-independent driver (cam_gather.cpp) the CPU and CUDA
// kernels register with their feature passes (cam_passes.h).
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <tuple>

#include "cam_passes.h"

namespace hcam_ops {

at::Tensor cam_gather(const CamPasses* passes, const at::Tensor& features, const at::Tensor& weight,
                      const at::Tensor& index);

// output_mask: which of (d features, d weight) to return; one not asked for
// is an undefined tensor (None in Python).
std::tuple<at::Tensor, at::Tensor> cam_gather_backward(const CamPasses* passes, const at::Tensor& grad,
                                                       const at::Tensor& features, const at::Tensor& weight,
                                                       const at::Tensor& index, std::array<bool, 2> output_mask);

}  // namespace hcam_ops
