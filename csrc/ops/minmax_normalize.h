// minmax_normalize: the device-independent driver (minmax_normalize.cpp) and
// the kernels each device supplies to it (cpu/, cuda/minmax_normalize_kernel).
#pragma once

#include <ATen/core/Tensor.h>

namespace hcam_ops {

// Over the rows (last dim) of a contiguous x: out = (x - min) / (max - min +
// eps), and its gradient gx for grad (contiguous, x's dtype); out and gx are
// x-shaped. Never called with no rows.
struct MinmaxNormalizeKernels {
  void (*forward)(const at::Tensor& x, double eps, const at::Tensor& out);
  void (*backward)(const at::Tensor& grad, const at::Tensor& x, double eps, const at::Tensor& gx);
};

at::Tensor minmax_normalize(const MinmaxNormalizeKernels* kernels, const at::Tensor& x, double eps);
at::Tensor minmax_normalize_backward(const MinmaxNormalizeKernels* kernels, const at::Tensor& grad, const at::Tensor& x,
                                     double eps);

}  // namespace hcam_ops
