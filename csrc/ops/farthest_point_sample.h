// farthest_point_sample: batched farthest point sampling in feature space
// (CAST graph pooling seeds): the device-independent driver
// (farthest_point_sample.cpp) and the kernels each device supplies to it.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/macros/Macros.h>

#include <optional>

namespace hcam_ops {

// The pick rule both devices share: the larger distance wins, and on a tie
// the lower index. Masked points carry distance -inf and are never picked
// while an unmasked point remains.
template <typename T>
C10_HOST_DEVICE inline bool fps_better(T d, int64_t i, T best_d, int64_t best_i) {
  return d > best_d || (d == best_d && i < best_i);
}

// The first pick: start, or the first unmasked point when start is masked
// (start itself when every point is masked).
C10_HOST_DEVICE inline int64_t fps_first(const bool* mask, int64_t N, int64_t start) {
  if (mask == nullptr || mask[start]) return start;
  for (int64_t j = 0; j < N; ++j) {
    if (mask[j]) return j;
  }
  return start;
}

// points [B, N, C] contiguous; mask [B, N] bool contiguous or undefined;
// idx [B, k] int64. Squared Euclidean distances accumulated in float32
// (float64 for float64 points).
struct FarthestPointSampleKernels {
  void (*sample)(const at::Tensor& points, const at::Tensor& mask, int64_t start, const at::Tensor& idx);
};

at::Tensor farthest_point_sample(const FarthestPointSampleKernels* kernels, const at::Tensor& points, int64_t k,
                                 int64_t start, const std::optional<at::Tensor>& mask);

}  // namespace hcam_ops
