// segment_mean: per-segment averages of a channels-last map (CAST tokens from
// superpixels); the per-device kernels behind segment_mean.cpp.
#pragma once

#include <ATen/core/Tensor.h>

#include "cpu/isa.h"

namespace hcam_ops {

// x [B, P, C] contiguous (P = H * W pixels), segments [B, P] int32 or int64;
// a pixel whose id is outside [0, S) belongs to no segment. Forward fills
// mean [B, S, C] (zeros for an empty segment) and counts [B, S] int64;
// backward writes dx [B, P, C] = grad[b, seg(p)] / counts[b, seg(p)] (0 for a
// pixel in no segment). Sums run over pixels in order: deterministic.
namespace cpu {
// One specialisation per compiled level (cpu/isa.h); call through HCAM_CPU_DISPATCH.
template <Isa>
void segment_mean_forward(const at::Tensor& x, const at::Tensor& segments, const at::Tensor& mean,
                          const at::Tensor& counts);
template <Isa>
void segment_mean_backward(const at::Tensor& grad, const at::Tensor& segments, const at::Tensor& counts,
                           const at::Tensor& dx);
}  // namespace cpu

namespace cuda {
void segment_mean_forward(const at::Tensor& x, const at::Tensor& segments, const at::Tensor& mean,
                          const at::Tensor& counts);
void segment_mean_backward(const at::Tensor& grad, const at::Tensor& segments, const at::Tensor& counts,
                           const at::Tensor& dx);
}  // namespace cuda

}  // namespace hcam_ops
