// farthest_point_sample: batched farthest point sampling in feature space
// (CAST graph pooling seeds); the per-device kernels behind
// farthest_point_sample.cpp.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/macros/Macros.h>

namespace hcam_ops {

// The pick rule both devices share: the larger distance wins, and on a tie
// the lower index. Masked points carry distance -inf and are never picked
// while an unmasked point remains.
template <typename T>
C10_HOST_DEVICE inline bool fps_better(T d, int64_t i, T best_d, int64_t best_i) {
  return d > best_d || (d == best_d && i < best_i);
}

// points [B, N, C] contiguous; mask [B, N] bool contiguous or undefined;
// idx [B, k] int64. Squared Euclidean distances accumulated in float32
// (float64 for float64 points).
namespace cpu {
void farthest_point_sample(const at::Tensor& points, const at::Tensor& mask, int64_t start,
                           const at::Tensor& idx);
}
namespace cuda {
void farthest_point_sample(const at::Tensor& points, const at::Tensor& mask, int64_t start,
                           const at::Tensor& idx);
}

}  // namespace hcam_ops
