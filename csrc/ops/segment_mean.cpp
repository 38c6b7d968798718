// segment_mean (CAST tokens: pixel features averaged within each superpixel):
// schema, checks and the device-independent driver.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include "cam_features.h"
#include "common.h"
#include "segment_mean.h"

namespace hcam_ops {

namespace {

constexpr const char* kOp = "segment_mean";

void check_segments(const at::Tensor& x, const at::Tensor& segments) {
  TORCH_CHECK(segments.scalar_type() == at::kInt || segments.scalar_type() == at::kLong, kOp,
              ": segments must be int32 or int64, got ", segments.scalar_type());
  TORCH_CHECK(segments.dim() == 3 && segments.size(0) == x.size(0) && segments.size(1) == x.size(1) &&
                  segments.size(2) == x.size(2),
              kOp, ": segments must be [B, H, W] = [", x.size(0), ", ", x.size(1), ", ", x.size(2), "], got ",
              segments.sizes());
  TORCH_CHECK(segments.device() == x.device(), kOp, ": segments are on ", segments.device(), ", x on ", x.device());
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> segment_mean(const SegmentMeanKernels* kernels, const at::Tensor& x,
                                                const at::Tensor& segments, int64_t num_segments) {
  TORCH_CHECK(x.dim() == 4, kOp, ": x must be [B, H, W, C], got shape ", x.sizes());
  check_float_type(x, kOp, "x");
  TORCH_CHECK(num_segments > 0, kOp, ": num_segments must be positive, got ", num_segments);
  check_segments(x, segments);
  const c10::DeviceGuard guard(x.device());
  const int64_t B = x.size(0), P = x.size(1) * x.size(2), C = x.size(3);
  const auto xs = x.contiguous().view({B, P, C});
  const auto seg = segments.contiguous().view({B, P});
  auto mean = at::empty({B, num_segments, C}, x.options());
  auto counts = at::empty({B, num_segments}, x.options().dtype(at::kLong));
  if (B == 0 || C == 0) {
    mean.zero_();
    counts.zero_();
    return {mean, counts};
  }
  kernels->forward(xs, seg, mean, counts);
  return {mean, counts};
}

at::Tensor segment_mean_backward(const SegmentMeanKernels* kernels, const at::Tensor& grad, const at::Tensor& x,
                                 const at::Tensor& segments, const at::Tensor& counts) {
  check_segments(x, segments);
  const int64_t B = x.size(0), P = x.size(1) * x.size(2), C = x.size(3);
  TORCH_CHECK(grad.dim() == 3 && grad.size(0) == B && grad.size(2) == C && counts.dim() == 2 && counts.size(0) == B &&
                  counts.size(1) == grad.size(1),
              kOp, "_backward: grad [B, S, C] and counts [B, S] do not match x ", x.sizes());
  // On another device than x, a kernel would be handed a foreign pointer.
  check_same_device(grad, "grad", x, "x", "segment_mean_backward");
  check_same_device(counts, "counts", x, "x", "segment_mean_backward");
  const c10::DeviceGuard guard(x.device());
  auto dx = at::empty({B, P, C}, x.options());
  if (B > 0 && C > 0 && P > 0) {
    // Each device kernel takes grad with its strides (the CPU one reads them,
    // the CUDA one makes rows).
    const auto g = grad.to(x.scalar_type());
    const auto seg = segments.contiguous().view({B, P});
    const auto cnt = counts.contiguous();
    kernels->backward(g, seg, cnt, dx);
  }
  return dx.view(x.sizes());
}

TORCH_LIBRARY_FRAGMENT(hcam_ops, m) {
  // x [B, H, W, C], segments [B, H, W] -> (mean [B, S, C], counts [B, S] int64).
  m.def("segment_mean(Tensor x, Tensor segments, int num_segments) -> (Tensor, Tensor)");
  m.def("segment_mean_backward(Tensor grad, Tensor x, Tensor segments, Tensor counts) -> Tensor");
}

}  // namespace hcam_ops
