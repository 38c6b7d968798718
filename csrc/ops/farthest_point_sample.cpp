// farthest_point_sample: schema, checks and the device-independent driver.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include "common.h"
#include "farthest_point_sample.h"

namespace hcam_ops {

namespace {
constexpr const char* kOp = "farthest_point_sample";
}

at::Tensor farthest_point_sample(const FarthestPointSampleKernels* kernels, const at::Tensor& points, int64_t k,
                                 int64_t start, const std::optional<at::Tensor>& mask) {
  TORCH_CHECK(points.dim() == 3, kOp, ": points must be [B, N, C], got shape ", points.sizes());
  check_float_type(points, kOp, "points");
  const int64_t B = points.size(0), N = points.size(1);
  TORCH_CHECK(N > 0 && points.size(2) > 0, kOp, ": points need N > 0 and C > 0, got ", points.sizes());
  TORCH_CHECK(N < (int64_t(1) << 31), kOp, ": at most 2^31 - 1 points per sample");
  TORCH_CHECK(k >= 1 && k <= N, kOp, ": k must be in [1, N = ", N, "], got ", k);
  TORCH_CHECK(start >= 0 && start < N, kOp, ": start must be in [0, N = ", N, "), got ", start);
  at::Tensor m;
  if (mask.has_value() && mask->defined()) {
    TORCH_CHECK(mask->scalar_type() == at::kBool && mask->dim() == 2 && mask->size(0) == B && mask->size(1) == N, kOp,
                ": mask must be bool [B, N] = [", B, ", ", N, "], got ", mask->scalar_type(), " ", mask->sizes());
    TORCH_CHECK(mask->device() == points.device(), kOp, ": mask is on ", mask->device(), ", points on ",
                points.device());
    m = mask->contiguous();
  }
  const c10::DeviceGuard guard(points.device());
  auto idx = at::empty({B, k}, points.options().dtype(at::kLong));
  if (B == 0) return idx;
  const auto p = points.contiguous();
  kernels->sample(p, m, start, idx);
  return idx;
}

TORCH_LIBRARY_FRAGMENT(hcam_ops, m) {
  // -> indices [B, k] int64. A masked start is replaced by the first unmasked point.
  m.def("farthest_point_sample(Tensor points, int k, int start=0, Tensor? mask=None) -> Tensor");
}

}  // namespace hcam_ops
