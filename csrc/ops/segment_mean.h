// segment_mean: per-segment averages of a channels-last map (CAST tokens from
// superpixels): the device-independent driver (segment_mean.cpp) and the
// kernels each device supplies to it.
#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>

namespace hcam_ops {

// x [B, P, C] contiguous (P = H * W pixels), segments [B, P] int32 or int64;
// a pixel whose id is outside [0, S) belongs to no segment. Forward fills
// mean [B, S, C] (zeros for an empty segment) and counts [B, S] int64;
// backward writes dx [B, P, C] = grad[b, seg(p)] / counts[b, seg(p)] (grad
// [B, S, C] with any strides; 0 for a
// pixel in no segment). Sums run over pixels in order: deterministic.
struct SegmentMeanKernels {
  void (*forward)(const at::Tensor& x, const at::Tensor& segments, const at::Tensor& mean, const at::Tensor& counts);
  void (*backward)(const at::Tensor& grad, const at::Tensor& segments, const at::Tensor& counts, const at::Tensor& dx);
};

std::tuple<at::Tensor, at::Tensor> segment_mean(const SegmentMeanKernels* kernels, const at::Tensor& x,
                                                const at::Tensor& segments, int64_t num_segments);
at::Tensor segment_mean_backward(const SegmentMeanKernels* kernels, const at::Tensor& grad, const at::Tensor& x,
                                 const at::Tensor& segments, const at::Tensor& counts);

}  // namespace hcam_ops
