// softmax_kl: the device-independent driver (softmax_kl.cpp) and the kernels
// each device supplies to it (cpu/, cuda/softmax_kl_kernel).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/string_view.h>

#include <tuple>

namespace hcam_ops {

// Over the rows (last dim) of contiguous p and q, temperature T: out[r] = KL
// between softmax(p[r] / T) and softmax(q[r] / T) in the direction f2c
// (cam_math.h); gp, gq its gradients for grad [rows] (contiguous, p's dtype).
// Never called with no rows.
struct SoftmaxKlKernels {
  void (*forward)(const at::Tensor& p, const at::Tensor& q, double temperature, bool f2c, const at::Tensor& out);
  void (*backward)(const at::Tensor& grad, const at::Tensor& p, const at::Tensor& q, double temperature, bool f2c,
                   const at::Tensor& gp, const at::Tensor& gq);
};

at::Tensor softmax_kl(const SoftmaxKlKernels* kernels, const at::Tensor& p, const at::Tensor& q, double temperature,
                      c10::string_view direction);
std::tuple<at::Tensor, at::Tensor> softmax_kl_backward(const SoftmaxKlKernels* kernels, const at::Tensor& grad,
                                                       const at::Tensor& p, const at::Tensor& q, double temperature,
                                                       c10::string_view direction);

}  // namespace hcam_ops
