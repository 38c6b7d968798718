// What the driver (minmax_normalize_stable.cpp) and the per-level kernel
// objects (minmax_kernels.cpp) share: the kernel table, and one entry point
// per compiled level. As csrc/ops/minmax_normalize.h and csrc/ops/cpu/isa.h,
// on torch::stable::Tensor.
#pragma once

#include <torch/csrc/stable/tensor.h>

namespace hcam_ops_stable {

// Over the rows (last dim) of a contiguous x: out = (x - min) / (max - min +
// eps), and its gradient gx for grad (contiguous, x's dtype).
struct Kernels {
  void (*forward)(const torch::stable::Tensor& x, double eps, const torch::stable::Tensor& out);
  void (*backward)(const torch::stable::Tensor& grad, const torch::stable::Tensor& x, double eps,
                   const torch::stable::Tensor& gx);
};

// minmax_kernels.cpp, compiled once per level (setup.py): baseline x86-64,
// and AVX-512 where setup.py defines HCAM_STABLE_AVX512.
const Kernels& kernels_DEFAULT();
const Kernels& kernels_AVX512();

}  // namespace hcam_ops_stable
